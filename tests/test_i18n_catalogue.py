"""The catalogues are complete: `manage.py makemessages` over the current code and templates
leaves no Dutch entry untranslated or fuzzy, no German or French entry of a driver page (the
staff pages are English and Dutch only), and the catalogues compile with their placeholders
intact (msgfmt --check)."""

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CATALOGUE = ROOT / "locale" / "nl" / "LC_MESSAGES" / "django.po"
#: The driver pages' languages besides English and Dutch: only the driver pages' texts.
DRIVER_LANGUAGES = ("de", "fr")
#: The sources of the driver pages' texts (a reference starting with one of these).
DRIVER_SOURCES = (
    "templates/receipts/",
    "templates/includes/language_switch.html",
    "sessions/public.py",
    "sessions/receipts.py",
    "evpay/validation.py",  # the VAT number and the refused-input messages
)
# What makemessages reads: the apps' code and the templates (not tests, the venv or var/).
SOURCES = ("evpay", "sessions", "terminals", "templates", "static", "manage.py")
MAKEMESSAGES = [
    "makemessages",
    "-l",
    "nl",
    *(arg for language in DRIVER_LANGUAGES for arg in ("-l", language)),
    "--ignore=.venv",
    "--ignore=var",
    "--add-location=file",
    "--no-obsolete",
]

pytestmark = pytest.mark.skipif(
    shutil.which("msgfmt") is None and os.environ.get("EVPAY_REQUIRE_SERVICES") != "1",
    reason="GNU gettext (msgfmt, xgettext) is missing: apt-get install gettext",
)


def catalogue(language: str, root: Path = ROOT) -> Path:
    return root / "locale" / language / "LC_MESSAGES" / "django.po"


def read_po(path: Path) -> list[dict]:
    """The entries of a .po file: msgctxt, msgid, msgid_plural, msgstr (list), flags and
    refs (the source files of `#:` lines)."""
    entries, entry, field = [], None, None
    for line in path.read_text(encoding="utf-8").splitlines() + [""]:
        if not line.strip():
            if entry is not None:
                entries.append(entry)
            entry = None
            continue
        if entry is None:
            entry = {
                "flags": set(),
                "refs": [],
                "msgctxt": None,
                "msgid_plural": None,
                "msgstr": {},
            }
        if line.startswith("#,"):
            entry["flags"] |= {flag.strip() for flag in line[2:].split(",")}
        elif line.startswith("#:"):
            entry["refs"] += line[2:].split()
        elif line.startswith("#"):
            continue
        elif match := re.match(r'^(msgctxt|msgid_plural|msgid|msgstr(?:\[(\d+)\])?) (".*")$', line):
            key, index, value = match.group(1), match.group(2), ast.literal_eval(match.group(3))
            if key.startswith("msgstr"):
                field = ("msgstr", int(index or 0))
                entry["msgstr"][field[1]] = value
            else:
                field = (key, None)
                entry[key] = value
        elif line.startswith('"'):
            value = ast.literal_eval(line)
            if field[0] == "msgstr":
                entry["msgstr"][field[1]] += value
            else:
                entry[field[0]] += value
    return [e for e in entries if e.get("msgid")]  # the header has an empty msgid


def problems(entries: list[dict]) -> list[str]:
    found = []
    for e in entries:
        name = (f"[{e['msgctxt']}] " if e["msgctxt"] else "") + e["msgid"]
        if "fuzzy" in e["flags"]:
            found.append(f"fuzzy: {name!r}")
        elif not e["msgstr"] or any(not text for text in e["msgstr"].values()):
            found.append(f"untranslated: {name!r}")
    return found


def driver_entries(entries: list[dict]) -> list[dict]:
    """The entries a driver page shows (also those a staff page shares)."""
    return [e for e in entries if any(ref.startswith(DRIVER_SOURCES) for ref in e["refs"])]


def test_the_dutch_catalogue_has_no_untranslated_or_fuzzy_entry_and_compiles():
    entries = read_po(CATALOGUE)
    assert len(entries) > 400  # the staff pages; guards against reading nothing
    assert problems(entries) == []
    check = subprocess.run(
        ["msgfmt", "--check", "-o", os.devnull, str(CATALOGUE)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr


@pytest.mark.parametrize("language", DRIVER_LANGUAGES)
def test_the_german_and_french_catalogues_translate_every_driver_page_text(language):
    path = catalogue(language)
    driver = driver_entries(read_po(path))
    assert len(driver) > 60  # the receipt, lookup, e-mail and invoice texts
    assert problems(driver) == []
    check = subprocess.run(
        ["msgfmt", "--check", "-o", os.devnull, str(path)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr


def test_makemessages_over_the_current_code_leaves_nothing_untranslated(tmp_path):
    """On a copy of the tree, so the working copy's catalogue is not rewritten: a string
    marked for translation without a Dutch entry shows up here as untranslated."""
    tree = tmp_path / "tree"
    for name in SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, tree / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.exists():
            shutil.copy2(source, tree / name)
    shutil.copytree(ROOT / "locale", tree / "locale", ignore=shutil.ignore_patterns("*.mo"))
    env = os.environ | {"DEBUG": "1", "EVPAY_VAR_DIR": str(tmp_path / "var")}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    run = subprocess.run(
        [sys.executable, "manage.py", *MAKEMESSAGES],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    fresh = read_po(catalogue("nl", tree))
    assert problems(fresh) == [], "run `make messages` and translate these in " + str(CATALOGUE)
    # Strings no longer in the code: the committed catalogue is stale (run `make messages`).
    assert len(fresh) == len(read_po(CATALOGUE))
    for language in DRIVER_LANGUAGES:
        fresh = read_po(catalogue(language, tree))
        assert problems(driver_entries(fresh)) == [], f"translate these in {catalogue(language)}"
        assert len(fresh) == len(read_po(catalogue(language)))


def test_the_check_sees_a_string_that_has_no_translation(tmp_path):
    """The check itself can fail: an entry with an empty msgstr and a fuzzy one are reported."""
    po = tmp_path / "django.po"
    po.write_text(
        'msgid ""\nmsgstr ""\n"Language: nl\\n"\n\n'
        'msgid "Overview"\nmsgstr "Overzicht"\n\n'
        'msgid "New page"\nmsgstr ""\n\n'
        '#, fuzzy\nmsgid "Sessions"\nmsgstr "Sessies"\n',
        encoding="utf-8",
    )
    assert problems(read_po(po)) == ["untranslated: 'New page'", "fuzzy: 'Sessions'"]


def test_the_driver_check_sees_only_the_driver_pages_texts(tmp_path):
    po = tmp_path / "django.po"
    po.write_text(
        'msgid ""\nmsgstr ""\n"Language: de\\n"\n\n'
        '#: templates/overview.html\nmsgid "Overview"\nmsgstr ""\n\n'
        '#: sessions/receipts.py templates/sessions/detail.html\nmsgid "Energy"\nmsgstr ""\n\n'
        '#: templates/receipts/lookup.html\nmsgid "Find my receipt"\nmsgstr "Meinen Beleg finden"\n',
        encoding="utf-8",
    )
    assert problems(driver_entries(read_po(po))) == ["untranslated: 'Energy'"]


def test_the_system_check_warns_about_a_catalogue_that_was_not_compiled(tmp_path, settings):
    from evpay.i18n import check_compiled_catalogues

    messages = tmp_path / "nl" / "LC_MESSAGES"
    messages.mkdir(parents=True)
    po = messages / "django.po"
    po.write_text('msgid ""\nmsgstr ""\n"Language: nl\\n"\n', encoding="utf-8")
    settings.LOCALE_PATHS = [tmp_path]
    assert [w.id for w in check_compiled_catalogues()] == ["evpay.W001"]
    subprocess.run(["msgfmt", "-o", str(po.with_suffix(".mo")), str(po)], check=True)
    assert check_compiled_catalogues() == []
