from django.apps import AppConfig
from django.db.models.signals import post_migrate
from django.utils.module_loading import autodiscover_modules


class DdpctlConfig(AppConfig):
    name = "ddpctl"
    verbose_name = "ddpctl (DDP server)"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.conf import settings
        from django.core.exceptions import ImproperlyConfigured

        from . import checks  # noqa: F401  (registers the system checks)
        from .redaction import configure as configure_redaction

        try:  # more dict keys whose values are kept out of the registry and logs
            configure_redaction(getattr(settings, "DDPCTL_SECRET_PARAM_KEYS", None))
        except ValueError as exc:
            raise ImproperlyConfigured(str(exc)) from None

        # Every installed app's ddp.py registers its methods and publications.
        autodiscover_modules("ddp")
        post_migrate.connect(_install_capture, sender=self)


def _install_capture(sender: AppConfig, using: str = "default", **kwargs: object) -> None:
    """``manage.py migrate`` (and test databases) get the change-capture triggers too."""
    from django.core.management.base import CommandError

    from .livedata.capture import MissingTables, install

    try:
        install(using)
    except MissingTables as exc:  # manage.py migrate prints it as one line, exit 1
        raise CommandError("\n".join(exc.problems)) from None
