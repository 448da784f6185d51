"""Issue 15 (item 6): ddpctl's tables in Django's admin, read-only, and closing a live
connection from it.  Django's test client as a logged-in superuser, against a real
``ddpctl serve`` that shares the test database."""
from __future__ import annotations

import pytest
from conftest import SERVER_ARGS, _url, eventually
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client

from ddpctl.models import Change, LiveConnection, LiveSubscriptionListing, Node
from ddpctl.testing import DDPClient, LiveServer

LISTS = {
    Node: "/admin/ddpctl/node/",
    LiveConnection: "/admin/ddpctl/liveconnection/",
    LiveSubscriptionListing: "/admin/ddpctl/livesubscriptionlisting/",
    Change: "/admin/ddpctl/change/",
}


@pytest.fixture
def node(transactional_db):
    """``ddpctl serve`` on the test database (committed rows: ``transactional_db``)."""
    with LiveServer([*SERVER_ARGS, "--node-heartbeat", "0.2"],
                    env={"DATABASE_URL": _url(connection.settings_dict["NAME"])}) as live:
        yield live


def _connected(live: LiveServer) -> tuple[DDPClient, str]:
    client = DDPClient(live.ws_url)
    session = client.connect()
    eventually(lambda: LiveConnection.objects.filter(id=session).exists())
    return client, session


def test_lists_render_read_only_with_params_redacted(admin_client, node):
    client, session = _connected(node)
    with client:
        client.subscribe("echo_params", "shown-param", {"password": "S3CR3T-admin"})
        eventually(lambda: LiveSubscriptionListing.objects.filter(connection=session).exists())
        from bookstore.models import Author

        Author.objects.create(name="Changelog entry")  # a changelog row
        pages = {model: admin_client.get(url) for model, url in LISTS.items()}
        # every row's page is read-only; add and delete are refused
        for model, url in LISTS.items():
            obj = model.objects.first()
            view = admin_client.get(f"{url}{_quote(obj.pk)}/change/")
            assert view.status_code == 200, model
            assert 'name="_save"' not in view.content.decode()
            assert "S3CR3T" not in view.content.decode()
            assert admin_client.get(f"{url}add/").status_code == 403
            assert admin_client.post(f"{url}{_quote(obj.pk)}/delete/", {"post": "yes"}).status_code == 403
            assert model.objects.filter(pk=obj.pk).exists()
    for model, page in pages.items():
        assert page.status_code == 200, model
        text = page.content.decode()
        assert f'href="{LISTS[model]}add/"' not in text  # no add button (nor link in the sidebar)
        assert "S3CR3T" not in text
    assert session in pages[LiveConnection].content.decode()
    assert '"shown-param"' in pages[LiveSubscriptionListing].content.decode().replace("&quot;", '"')
    assert "[redacted]" in pages[LiveSubscriptionListing].content.decode()
    assert "bookstore_author" in pages[Change].content.decode()
    assert "Close the selected connections" in pages[LiveConnection].content.decode()
    assert 'value="delete_selected"' not in pages[LiveConnection].content.decode()


def _quote(pk) -> str:
    from django.contrib.admin.utils import quote

    return quote(str(pk))


def test_the_close_action_closes_a_live_connection(admin_client, node):
    client, session = _connected(node)
    other, kept = _connected(node)
    with client, other:
        response = admin_client.post(LISTS[LiveConnection], {
            "action": "close_connections", "_selected_action": [session], "index": 0}, follow=True)
        assert response.status_code == 200
        text = response.content.decode()
        assert f"Closed 1 connection(s): {session}." in text
        with pytest.raises(ConnectionError, match="code 1000"):
            while True:
                client.recv()
        assert other.call("echo", 1) == [1]  # the other connection lives on
    eventually(lambda: not LiveConnection.objects.filter(id=session).exists())


def test_the_close_action_needs_the_delete_permission(node):
    client = Client()
    viewer = User.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_liveconnection"))
    client.force_login(viewer)
    ddp, session = _connected(node)
    with ddp:
        page = client.get(LISTS[LiveConnection])
        assert page.status_code == 200 and session in page.content.decode()
        assert "close_connections" not in page.content.decode()
        refused = client.post(LISTS[LiveConnection], {"action": "close_connections",
                                                      "_selected_action": [session], "index": 0}, follow=True)
        assert refused.status_code == 200 and "Closed" not in refused.content.decode()
        assert ddp.call("echo", 2) == [2]  # still connected
