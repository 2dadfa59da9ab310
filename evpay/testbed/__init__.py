"""The testbed: soak, simulated chargers and drivers, ledger check, process supervisor. Uses only
public names of the apps."""
