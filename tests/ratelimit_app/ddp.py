from django.apps import apps

from ddpctl.api import MeteorError, each, method, rate_limit

runs = {"counted": 0}


@method
def counted():
    """How many times this method ran in this process."""
    runs["counted"] += 1
    return runs["counted"]


# At most 3 calls of ``counted`` per connection in 10 minutes, added the way a project's
# ddp.py would.
rate_limit.add_rule({"type": "method", "name": "counted", "connection_id": each}, 3, 600_000)

if not apps.is_installed("ddpctl.accounts"):
    # Meteor counts calls to ``login`` whether or not they succeed; this stand-in always fails
    # like a wrong password does.
    @method
    def login(options):
        raise MeteorError(403, "Something went wrong. Please check your credentials.")
