from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "ddpctl.accounts"
    label = "ddpctl_accounts"
    verbose_name = "ddpctl accounts (Meteor logins)"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.contrib.auth import get_user_model

        from ..livedata.capture import capture_models
        from ..livedata.watchers import watchers
        from . import checks  # noqa: F401  (registers the system checks)
        from .models import LoginToken
        from .revocation import revoke_changed, watched_tables

        # Each node must hear about token deletions and user changes (deactivation, a new
        # password) to close the connections they log out, so both tables are captured.
        capture_models(lambda: [get_user_model(), LoginToken])
        watchers.register("accounts revocation", watched_tables, revoke_changed)
        from ..session_login import session_login_listeners
        from .revocation import logins
        if logins.set_session not in session_login_listeners:
            session_login_listeners.append(logins.set_session)
