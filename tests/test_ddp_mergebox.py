"""Meteor's packages/ddp-server/session_view_tests.js, ported case by case."""
import pytest

from ddpctl.ddp.mergebox import MergeboxError, SessionView

UNDEF = object()  # Meteor's ``undefined`` in a changed() call means "clear this field"


class View:
    """The harness of session_view_tests.js: records added/changed/removed callbacks."""

    def __init__(self):
        self.view = SessionView()
        self.results = []

    def _record(self, messages):
        for m in messages:
            if m["msg"] == "added":
                self.results.append({"fun": "added", "id": m["id"], "fields": m.get("fields", {})})
            elif m["msg"] == "changed":
                changed = dict(m.get("fields", {}))
                changed.update({k: UNDEF for k in m.get("cleared", [])})
                self.results.append({"fun": "changed", "id": m["id"], "changed": changed})
            else:
                self.results.append({"fun": "removed", "id": m["id"]})

    def added(self, sub, doc_id, fields):
        self._record(self.view.added(sub, "test", doc_id, fields))

    def changed(self, sub, doc_id, fields):
        values = {k: v for k, v in fields.items() if v is not UNDEF}
        cleared = [k for k, v in fields.items() if v is UNDEF]
        self._record(self.view.changed(sub, "test", doc_id, values, cleared))

    def removed(self, sub, doc_id):
        self._record(self.view.removed(sub, "test", doc_id))

    def expect(self, result):
        assert self.results, f"expected {result}, got nothing"
        assert self.results.pop(0) == result

    def expect_none(self):
        assert self.results == []

    def drain(self):
        out, self.results = self.results, []
        return out


def test_exists_reveal():
    v = View()
    v.added("A", "A1", {})
    v.expect({"fun": "added", "id": "A1", "fields": {}})
    v.expect_none()
    v.added("B", "A1", {})
    v.expect_none()
    v.removed("A", "A1")
    v.expect_none()
    v.removed("B", "A1")
    v.expect({"fun": "removed", "id": "A1"})
    v.expect_none()


def test_added_a_second_field_in_another_sub():
    v = View()
    v.added("A", "A1", {"a": "foo"})
    v.expect({"fun": "added", "id": "A1", "fields": {"a": "foo"}})
    v.added("B", "A1", {"a": "foo", "b": "bar"})
    v.expect({"fun": "changed", "id": "A1", "changed": {"b": "bar"}})
    v.removed("A", "A1")
    v.expect_none()
    v.removed("B", "A1")
    v.expect({"fun": "removed", "id": "A1"})
    v.expect_none()


def test_field_reveal():
    v = View()
    v.added("A", "A1", {"foo": "bar"})
    v.expect({"fun": "added", "id": "A1", "fields": {"foo": "bar"}})
    v.added("B", "A1", {"foo": "baz"})
    v.removed("A", "A1")
    v.expect({"fun": "changed", "id": "A1", "changed": {"foo": "baz"}})
    v.expect_none()
    v.removed("B", "A1")
    v.expect({"fun": "removed", "id": "A1"})
    v.expect_none()


def test_field_change():
    v = View()
    v.added("A", "A1", {"foo": "bar"})
    v.expect({"fun": "added", "id": "A1", "fields": {"foo": "bar"}})
    v.changed("A", "A1", {"foo": "baz"})
    v.expect({"fun": "changed", "id": "A1", "changed": {"foo": "baz"}})
    v.expect_none()
    v.removed("A", "A1")
    v.expect({"fun": "removed", "id": "A1"})
    v.expect_none()


def test_field_clear():
    v = View()
    v.added("A", "A1", {"foo": "bar"})
    v.expect({"fun": "added", "id": "A1", "fields": {"foo": "bar"}})
    v.changed("A", "A1", {"foo": UNDEF})
    v.expect({"fun": "changed", "id": "A1", "changed": {"foo": UNDEF}})
    v.expect_none()
    v.removed("A", "A1")
    v.expect({"fun": "removed", "id": "A1"})
    v.expect_none()


def test_change_makes_a_new_field():
    v = View()
    v.added("A", "A1", {"foo": "bar"})
    v.expect({"fun": "added", "id": "A1", "fields": {"foo": "bar"}})
    v.changed("A", "A1", {"baz": "quux"})
    v.expect({"fun": "changed", "id": "A1", "changed": {"baz": "quux"}})
    v.expect_none()


def test_add_remove_add():
    v = View()
    v.added("A", "A1", {"foo": "bar"})
    v.expect({"fun": "added", "id": "A1", "fields": {"foo": "bar"}})
    v.removed("A", "A1")
    v.expect({"fun": "removed", "id": "A1"})
    v.added("A", "A1", {"foo": "bar"})
    v.expect({"fun": "added", "id": "A1", "fields": {"foo": "bar"}})
    v.expect_none()


def test_field_clear_reveal():
    v = View()
    v.added("A", "A1", {"foo": "bar"})
    v.expect({"fun": "added", "id": "A1", "fields": {"foo": "bar"}})
    v.added("B", "A1", {"foo": "baz"})
    v.changed("A", "A1", {"foo": UNDEF})
    v.expect({"fun": "changed", "id": "A1", "changed": {"foo": "baz"}})
    v.expect_none()
    v.removed("A", "A1")
    v.expect_none()
    v.removed("B", "A1")
    v.expect({"fun": "removed", "id": "A1"})
    v.expect_none()


def test_change_to_canonical_value_produces_no_change():
    v = View()
    v.added("A", "A1", {"foo": "bar"})
    v.expect({"fun": "added", "id": "A1", "fields": {"foo": "bar"}})
    v.added("B", "A1", {"foo": "baz"})
    canon = "bar"
    maybe = v.drain()
    if maybe:
        assert maybe == [{"fun": "changed", "id": "A1", "changed": {"foo": "baz"}}]
        canon = "baz"
    v.changed("B", "A1", {"foo": canon})
    v.expect_none()
    v.removed("A", "A1")
    v.expect_none()
    v.removed("B", "A1")
    v.expect({"fun": "removed", "id": "A1"})
    v.expect_none()


def test_new_field_of_canonical_value_produces_no_change():
    v = View()
    v.added("A", "A1", {"foo": "bar"})
    v.expect({"fun": "added", "id": "A1", "fields": {"foo": "bar"}})
    v.added("B", "A1", {})
    v.changed("B", "A1", {"foo": "bar"})
    v.expect_none()
    v.removed("A", "A1")
    v.expect_none()
    v.removed("B", "A1")
    v.expect({"fun": "removed", "id": "A1"})
    v.expect_none()


def test_clear_all_clears_only_once():
    v = View()
    v.added("A", "A1", {"foo": "bar"})
    v.expect({"fun": "added", "id": "A1", "fields": {"foo": "bar"}})
    v.added("B", "A1", {"foo": "bar"})
    v.added("C", "A1", {"foo": "bar"})
    v.changed("A", "A1", {"foo": UNDEF})
    v.changed("B", "A1", {"foo": UNDEF})
    v.changed("C", "A1", {"foo": UNDEF})
    v.expect({"fun": "changed", "id": "A1", "changed": {"foo": UNDEF}})
    v.expect_none()
    v.removed("A", "A1")
    v.expect_none()
    v.removed("B", "A1")
    v.expect_none()


def test_change_all_changes_only_once():
    v = View()
    v.added("A", "A1", {"foo": "bar"})
    v.expect({"fun": "added", "id": "A1", "fields": {"foo": "bar"}})
    v.added("B", "A1", {"foo": "bar"})
    v.added("C", "A1", {"foo": "bar"})
    v.changed("B", "A1", {"foo": "baz"})
    v.changed("A", "A1", {"foo": "baz"})
    v.changed("C", "A1", {"foo": "baz"})
    v.expect({"fun": "changed", "id": "A1", "changed": {"foo": "baz"}})
    v.expect_none()
    v.removed("A", "A1")
    v.expect_none()
    v.removed("B", "A1")
    v.expect_none()


def test_multiple_operations_at_once_in_a_change():
    v = View()
    v.added("A", "A1", {"foo": "bar", "baz": "quux"})
    v.expect({"fun": "added", "id": "A1", "fields": {"foo": "bar", "baz": "quux"}})
    v.added("B", "A1", {"foo": "baz"})
    v.changed("A", "A1", {"thing": "stuff", "foo": UNDEF, "baz": UNDEF})
    v.expect({"fun": "changed", "id": "A1", "changed": {"foo": "baz", "thing": "stuff", "baz": UNDEF}})
    v.expect_none()
    v.removed("A", "A1")
    v.expect({"fun": "changed", "id": "A1", "changed": {"thing": UNDEF}})
    v.expect_none()
    v.removed("B", "A1")
    v.expect({"fun": "removed", "id": "A1"})
    v.expect_none()


def test_more_than_one_document():
    v = View()
    v.added("A", "A1", {"foo": "bar", "baz": "quux"})
    v.expect({"fun": "added", "id": "A1", "fields": {"foo": "bar", "baz": "quux"}})
    v.added("A", "A2", {"foo": "baz"})
    v.expect({"fun": "added", "id": "A2", "fields": {"foo": "baz"}})
    v.changed("A", "A1", {"thing": "stuff", "foo": UNDEF, "baz": UNDEF})
    v.expect({"fun": "changed", "id": "A1", "changed": {"thing": "stuff", "foo": UNDEF, "baz": UNDEF}})
    v.expect_none()
    v.removed("A", "A1")
    v.expect({"fun": "removed", "id": "A1"})
    v.removed("A", "A2")
    v.expect({"fun": "removed", "id": "A2"})
    v.expect_none()


def test_multiple_docs_removed():
    v = View()
    v.added("A", "A1", {"foo": "bar", "baz": "quux"})
    v.expect({"fun": "added", "id": "A1", "fields": {"foo": "bar", "baz": "quux"}})
    v.added("A", "A2", {"foo": "baz"})
    v.expect({"fun": "added", "id": "A2", "fields": {"foo": "baz"}})
    v.removed("A", "A1")
    v.expect({"fun": "removed", "id": "A1"})
    v.removed("A", "A2")
    v.expect({"fun": "removed", "id": "A2"})
    v.expect_none()


def test_complicated_sequence():
    v = View()
    v.added("A", "A1", {"foo": "bar", "baz": "quux"})
    v.expect({"fun": "added", "id": "A1", "fields": {"foo": "bar", "baz": "quux"}})
    v.added("A", "A2", {"foo": "eats"})
    v.expect({"fun": "added", "id": "A2", "fields": {"foo": "eats"}})
    v.added("B", "A1", {"foo": "baz"})
    v.changed("A", "A1", {"thing": "stuff", "foo": UNDEF, "baz": UNDEF})
    v.expect({"fun": "changed", "id": "A1", "changed": {"foo": "baz", "thing": "stuff", "baz": UNDEF}})
    v.expect_none()
    v.removed("A", "A1")
    v.removed("A", "A2")
    v.expect({"fun": "changed", "id": "A1", "changed": {"thing": UNDEF}})
    v.expect({"fun": "removed", "id": "A2"})
    v.expect_none()
    v.removed("B", "A1")
    v.expect({"fun": "removed", "id": "A1"})
    v.expect_none()


def test_added_becomes_changed():
    v = View()
    v.added("A", "A1", {"foo": "bar"})
    v.expect({"fun": "added", "id": "A1", "fields": {"foo": "bar"}})
    v.added("B", "A1", {"hi": "there"})
    v.expect({"fun": "changed", "id": "A1", "changed": {"hi": "there"}})
    v.removed("A", "A1")
    v.expect({"fun": "changed", "id": "A1", "changed": {"foo": UNDEF}})
    v.removed("B", "A1")
    v.expect({"fun": "removed", "id": "A1"})


def test_weird_key_names():
    v = View()
    v.added("A", "A1", {})
    v.expect({"fun": "added", "id": "A1", "fields": {}})
    v.changed("A", "A1", {"constructor": "bla"})
    v.expect({"fun": "changed", "id": "A1", "changed": {"constructor": "bla"}})


def test_clear_undefined_value():
    v = View()
    v.added("A", "A1", {"field": "value"})
    v.expect({"fun": "added", "id": "A1", "fields": {"field": "value"}})
    v.expect_none()
    v.changed("A", "A1", {"field": UNDEF})
    v.expect({"fun": "changed", "id": "A1", "changed": {"field": UNDEF}})
    v.expect_none()
    v.changed("A", "A1", {"field": UNDEF})
    v.expect_none()


# -- beyond Meteor's cases ---------------------------------------------------------------

def test_wire_shape_of_added_without_fields_and_clear_only_change():
    view = SessionView()
    assert view.added("A", "c", "x", {}) == [{"msg": "added", "collection": "c", "id": "x"}]
    view.changed("A", "c", "x", {"f": 1})
    assert view.changed("A", "c", "x", cleared=["f"]) == [
        {"msg": "changed", "collection": "c", "id": "x", "cleared": ["f"]}]


def test_id_field_is_never_published():
    view = SessionView()
    assert view.added("A", "c", "x", {"_id": "x", "a": 1}) == [
        {"msg": "added", "collection": "c", "id": "x", "fields": {"a": 1}}]


def test_remove_subscription_withdraws_only_its_documents():
    view = SessionView()
    view.added("A", "c", "1", {"a": 1})
    view.added("A", "c", "2", {"a": 2})
    view.added("B", "c", "2", {"b": 2})
    out = view.remove_subscription("A")
    assert out == [
        {"msg": "removed", "collection": "c", "id": "1"},
        {"msg": "changed", "collection": "c", "id": "2", "cleared": ["a"]},
    ]
    assert view.document("c", "2") == {"b": 2}
    assert view.remove_subscription("A") == []


def test_null_is_a_value_not_a_clear():
    view = SessionView()
    view.added("A", "c", "1", {"a": 1})
    assert view.changed("A", "c", "1", {"a": None}) == [
        {"msg": "changed", "collection": "c", "id": "1", "fields": {"a": None}}]


def test_true_and_one_are_different_values():
    view = SessionView()
    view.added("A", "c", "1", {"a": 1})
    assert view.changed("A", "c", "1", {"a": True}) != []


def test_unknown_documents_are_errors():
    view = SessionView()
    with pytest.raises(MergeboxError):
        view.changed("A", "c", "nope", {"a": 1})
    with pytest.raises(MergeboxError):
        view.removed("A", "c", "nope")
