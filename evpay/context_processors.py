from evpay.roles import user_roles


def roles(request):
    user = getattr(request, "user", None)
    return {"roles": user_roles(user) if user is not None else frozenset()}
