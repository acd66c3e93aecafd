"""Blind overlap review and agreement (issue 13).

- Agreement numbers: Cohen's kappa equals scikit-learn's; Fleiss' kappa gives the worked example of
  Fleiss (1971) as Wikipedia shows it (0.210); per-label kappa on a case worked by hand.
- Overlap assignment: seeded, the overlap fraction kept, the load balanced; the same from the CLI.
- Blind: a reviewer assigned a shared pair sees no one's decision on it (store, CLI, Review page)
  until they have decided, and their decision is recorded although the pair is no longer pending.
- The Reviewers page shows Cohen's and Fleiss' kappa to an admin, not to an annotator.

Real parts: a DuckDB project in tmp_path, the app through AppTest, the CLI through typer's runner.
"""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest
from sklearn.metrics import cohen_kappa_score
from streamlit.testing.v1 import AppTest

from scoring.agreement import cohen_kappa, fleiss
from store import pair_pages
from store import pairs as pairs_store
from store import users as users_store
from store.db import ConflictError, Project
from store.filters import parse_where
from store.records import NewPair, PairContent
from tests.test_auth import add_accounts, cli, open_app, sign_in

LABELS = ("accepted", "rejected", "needs_fix")


# ---------------------------------------------------------------- the numbers (pure)


@pytest.mark.parametrize("seed", range(8))
def test_cohen_kappa_matches_sklearn_on_random_labels(seed):
    rng = random.Random(seed)
    n = rng.randint(5, 60)
    a = [rng.choice(LABELS) for _ in range(n)]
    # b agrees with a more often than chance (so kappa is not ~0 every time), and sometimes uses fewer labels
    b = [x if rng.random() < 0.5 else rng.choice(LABELS[: 2 + seed % 2]) for x in a]
    assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b), abs=1e-12)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_cohen_kappa_is_none_where_sklearn_is_nan():
    same = ["accepted"] * 5
    assert math.isnan(cohen_kappa_score(same, same))  # sklearn warns and gives NaN
    assert cohen_kappa(same, same) is None
    assert cohen_kappa([], []) is None


# Fleiss (1971) as worked on Wikipedia ("Fleiss' kappa", worked example): 10 subjects, 14 raters,
# 5 categories; the table gives how many raters put each subject in each category.
WIKIPEDIA = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]


def _items(table: list[list[int]]) -> list[list[str]]:
    return [[f"c{j + 1}" for j, n in enumerate(row) for _ in range(n)] for row in table]


def test_fleiss_kappa_matches_the_worked_example():
    got = fleiss(_items(WIKIPEDIA))
    assert got.kappa is not None and round(got.kappa, 3) == 0.210
    assert (got.items, got.min_raters, got.max_raters) == (10, 14, 14)
    # the overall kappa is the per-label kappas averaged with weights p_j (1 - p_j)
    ratings = Counter(label for item in _items(WIKIPEDIA) for label in item)
    share = {k: v / 140 for k, v in ratings.items()}
    assert [round(share[f"c{j}"], 3) for j in range(1, 6)] == [0.143, 0.2, 0.279, 0.15, 0.229]  # Wikipedia's p_j
    weights = {k: p * (1 - p) for k, p in share.items()}
    weighted = sum(weights[k] * got.per_label[k] for k in weights) / sum(weights.values())  # type: ignore[operator]
    assert weighted == pytest.approx(got.kappa)


@pytest.mark.parametrize(("items", "n_items"), [
    ([], 0),
    ([["accepted"], ["rejected"]], 0),  # one rater per item: nothing to agree on
    ([["accepted", "accepted"], ["accepted", "accepted", "accepted"], ["rejected"]], 2),  # one label throughout
])
def test_fleiss_kappa_is_none_when_undefined(items, n_items):
    got = fleiss(items)
    assert got.kappa is None and got.items == n_items
    assert all(v is None for v in got.per_label.values())


def test_fleiss_leaves_out_items_with_one_rater_and_allows_uneven_counts():
    two = [["accepted", "accepted"], ["rejected", "rejected"], ["accepted", "rejected"]]
    assert fleiss([*two, ["needs_fix"]]) == fleiss(two)
    uneven = fleiss([["accepted", "accepted", "accepted"], ["rejected", "rejected"], ["accepted", "rejected"]])
    assert (uneven.items, uneven.min_raters, uneven.max_raters) == (3, 2, 3)
    # P = (1, 1, 0) -> 2/3; shares 4/7, 3/7 -> P_e = 25/49; kappa = (2/3 - 25/49) / (24/49)
    assert uneven.kappa == pytest.approx((2 / 3 - 25 / 49) / (24 / 49))


def test_per_label_kappa_on_a_constructed_case():
    # "accepted" is always agreed on; "rejected" and "needs_fix" are confused with each other half the time
    items = [["accepted", "accepted"], ["accepted", "accepted"], ["rejected", "needs_fix"],
             ["needs_fix", "rejected"], ["rejected", "rejected"], ["needs_fix", "needs_fix"]]
    got = fleiss(items)
    # per label: 1 - sum n(2 - n)/2 / (N p q): accepted 1 - 0; rejected and needs fix 1 - 1 / (6 * 1/3 * 2/3)
    assert got.per_label == pytest.approx({"accepted": 1.0, "needs_fix": 0.25, "rejected": 0.25})
    assert got.kappa == pytest.approx(0.5)  # (4/6 - 1/3) / (1 - 1/3)


# ---------------------------------------------------------------- overlap assignment


def _pairs(p: Project, n: int, prefix: str = "question") -> list[str]:
    with p.transaction() as con:
        return pairs_store.add_pairs(con, [NewPair(content=PairContent(instruction=f"{prefix} {i}", response="a"))
                                           for i in range(n)])


def _by_pair(rows: list[tuple[str, str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for pid, user in rows:
        out.setdefault(pid, []).append(user)
    return out


@pytest.mark.parametrize(("n", "fraction", "overlap"), [(50, 0.2, 2), (37, 0.5, 3), (10, 0.0, 2), (10, 1.0, 2)])
def test_overlap_plan_is_seeded_keeps_the_fraction_and_balances_the_load(n, fraction, overlap):
    ids = [f"p_{i:03d}" for i in range(n)]
    users = ["amy", "ben", "cy"]
    plan = users_store.plan_assignments(ids, users, overlap=overlap, fraction=fraction, seed=0)
    assert plan == users_store.plan_assignments(ids, users, overlap=overlap, fraction=fraction, seed=0)
    by_pair = _by_pair(plan)
    assert sorted(by_pair) == ids  # every pair assigned
    shared = [pid for pid, who in by_pair.items() if len(who) > 1]
    assert len(shared) == round(fraction * n)
    assert all(len(set(who)) == len(who) == (overlap if pid in shared else 1) for pid, who in by_pair.items())
    load = Counter(u for _, u in plan)
    assert max(load.values()) - min(load.values()) <= 1
    if 0 < fraction < 1:
        other = _by_pair(users_store.plan_assignments(ids, users, overlap=overlap, fraction=fraction, seed=1))
        assert {pid for pid, who in other.items() if len(who) > 1} != set(shared)  # the seed picks the shared ones


def test_assign_writes_the_plan_once_and_refuses_a_bad_fraction(project):
    ids = _pairs(project, 20)
    with project.connect() as con:
        assert users_store.assign(con, ids, ["amy", "ben"], overlap=2, fraction=0.25, seed=3) == 25
        assert users_store.assign(con, ids, ["amy", "ben"], overlap=2, fraction=0.25, seed=3) == 0
        rows = con.execute("SELECT pair_id, user_name FROM assignments").fetchall()
        with pytest.raises(ValueError):
            users_store.assign(con, ids, ["amy"], fraction=1.5)
    want = users_store.plan_assignments(ids, ["amy", "ben"], overlap=2, fraction=0.25, seed=3)
    assert sorted(rows) == sorted(want)


def test_cli_assigns_with_overlap_and_refuses_unknown_accounts(project, monkeypatch):
    monkeypatch.setenv("TUNELOOP_PROJECT", str(project.root))
    add_accounts(project, ("root", "admin"), ("amy", "annotator"), ("ben", "annotator"), ("cy", "annotator"))
    ids = _pairs(project, 30)
    res = cli("users", "assign", "--where", "status=pending", "--to", "amy,ben,cy", "--overlap", "0.2",
              "--seed", "0")
    assert res.exit_code == 0, res.output
    with project.connect() as con:
        rows = con.execute("SELECT pair_id, user_name FROM assignments").fetchall()
        pending = users_store.assigned_pair_ids(con, "amy", limit=100)
        order = pair_pages.page_ids(con, parse_where("status=pending"), limit=100)  # the order the CLI reads
    assert sorted(order) == sorted(ids)
    assert sorted(rows) == sorted(users_store.plan_assignments(order, ["amy", "ben", "cy"], overlap=2, fraction=0.2))
    assert sum(n > 1 for n in Counter(p for p, _ in rows).values()) == 6
    assert pending and set(pending) <= set(ids)
    bad = cli("users", "assign", "--to", "amy,zed")
    assert bad.exit_code == 2 and "zed" in bad.output


# ---------------------------------------------------------------- blind


@pytest.fixture
def overlap(project, monkeypatch) -> tuple[Project, str, str]:
    """root (admin), amy and ben (annotators); pair X is shared by amy and ben, pair Y is ben's alone.
    amy has accepted X; root has sent Y back (needs fix)."""
    monkeypatch.setenv("TUNELOOP_PROJECT", str(project.root))
    add_accounts(project, ("root", "admin"), ("amy", "annotator"), ("ben", "annotator"))
    (x,), (y,) = _pairs(project, 1, "shared"), _pairs(project, 1, "alone")  # created in this order
    with project.connect() as con:
        users_store.assign(con, [x], ["amy", "ben"], overlap=2)
        users_store.assign(con, [y], ["ben"])
        pairs_store.set_status(con, x, "accepted", author="amy", comment="amy thinks it is fine")
        pairs_store.set_status(con, y, "needs_fix", author="root", comment="root wants a fix")
    return project, x, y


def test_a_second_reviewer_sees_no_decision_until_deciding(overlap):
    project, x, y = overlap
    with project.connect() as con:
        assert users_store.is_blind(con, x, "ben") and users_store.visible_reviews(con, x, "ben") == []
        assert not users_store.is_blind(con, x, "amy")  # decided already
        assert [r.author for r in users_store.visible_reviews(con, x, "root")] == ["amy"]  # not an assignee
        assert not users_store.is_blind(con, y, "ben")  # ben's alone: nothing to be blind to
        assert [r.author for r in users_store.visible_reviews(con, y, "ben")] == ["root"]
        # an edit is logged in reviews with the status it found (amy's): it is no decision of ben's
        head = pairs_store.get(con, x)
        pairs_store.revise(con, x, base_revision_id=head.head_revision_id, author="ben", response="a, edited")
        assert users_store.is_blind(con, x, "ben") and users_store.visible_reviews(con, x, "ben") == []
        assert users_store.assigned_pair_ids(con, "ben", limit=10) == [x, y]
        assert users_store.agreement(con) == []
        # ben opened X before amy decided (version 1): still recorded, as ben's decision
        users_store.decide(con, x, "rejected", author="ben", expected_version=1,
                           seen_revision_id=pairs_store.get(con, x).head_revision_id)
        assert not users_store.is_blind(con, x, "ben")
        got = [(r.author, r.status) for r in users_store.visible_reviews(con, x, "ben") if r.comment != "a, edited"]
        assert ("amy", "accepted") in got and got[-1] == ("ben", "rejected")
        assert pairs_store.get(con, x).status == "rejected"  # the pair's status: the latest decision
        assert users_store.agreement(con) == [("amy", "ben", 1, 0.0)]
        assert users_store.assigned_pair_ids(con, "ben", limit=10) == [y]


def test_a_blind_decision_on_a_changed_text_is_a_conflict(overlap):
    project, x, _ = overlap
    with project.connect() as con:
        seen = pairs_store.get(con, x).head_revision_id
        pairs_store.revise(con, x, base_revision_id=seen, author="amy", response="amy rewrote it")
        with pytest.raises(ConflictError, match="text"):
            users_store.decide(con, x, "accepted", author="ben", expected_version=1, seen_revision_id=seen)
        assert users_store.is_blind(con, x, "ben")  # nothing recorded
        # not blind: the version check stands as before
        with pytest.raises(ConflictError):
            users_store.decide(con, x, "accepted", author="root", expected_version=1, seen_revision_id=seen)


def test_cli_hides_the_status_from_a_blind_reviewer_and_records_their_decision(overlap):
    project, x, _ = overlap
    shown = cli("pairs", "show", x, "--author", "ben")
    assert shown.exit_code == 0, shown.output
    assert "blind overlap" in shown.output
    assert "accepted" not in shown.output and "amy" not in shown.output
    assert "accepted" in cli("pairs", "show", x, "--author", "root").output
    # `pairs accept` leaves pairs already accepted alone, but not ben's first decision on a shared pair
    res = cli("pairs", "accept", x, "--author", "ben")
    assert res.exit_code == 0 and "1 pair(s)" in res.output
    with project.connect() as con:
        assert users_store.paired_decisions(con, "amy", "ben") == [(x, "accepted", "accepted")]
    assert "amy" in cli("pairs", "show", x, "--author", "ben").output


def _page_text(at: AppTest) -> str:
    return "\n".join([m.value for m in at.markdown] + [c.value for c in at.caption])


def test_review_page_is_blind_until_the_reviewer_decides(overlap):
    project, x, y = overlap
    at = sign_in(open_app(), "ben", "ben-password")
    at.switch_page("views/review.py").run()
    assert not at.exception, [e.value for e in at.exception]
    text = _page_text(at)
    assert f"`{x}`" in text and "awaiting your decision" in text
    assert "amy" not in text and "accepted" not in text.lower()
    assert "History: 1 revisions, 0 decisions" in [e.label for e in at.expander]
    assert any("Blind overlap" in c.value for c in at.caption)

    at.button(key="rv_reject").click().run()  # ben's decision is recorded although X is no longer pending
    assert not at.exception, [e.value for e in at.exception]
    text = _page_text(at)
    assert f"`{y}`" in text and "needs fix" in text and "root wants a fix" in text  # Y: not shared, all shown
    assert "awaiting your decision" not in text
    with project.connect() as con:
        assert users_store.paired_decisions(con, "amy", "ben") == [(x, "accepted", "rejected")]

    at.button(key="rv_back").click().run()  # back on X, decided now: amy's decision shows
    text = _page_text(at)
    assert f"`{x}`" in text and "awaiting your decision" not in text
    assert any("amy" in c.value and "accepted" in c.value and "amy thinks it is fine" in c.value for c in at.caption)


def test_reviewers_page_shows_agreement_to_an_admin_only(overlap):
    project, x, y = overlap
    ids = _pairs(project, 6, "more")
    with project.connect() as con:
        pairs_store.set_status(con, x, "accepted", author="ben")
        for i, pid in enumerate(ids):
            pairs_store.set_status(con, pid, "accepted", author="amy")
            pairs_store.set_status(con, pid, "accepted" if i % 2 else "rejected", author="ben")

    def reviewers_page(name: str) -> AppTest:
        at = sign_in(open_app(), name, f"{name}-password")
        at.switch_page("views/users.py").run()
        assert not at.exception, [e.value for e in at.exception]
        return at

    admin = reviewers_page("root")
    (fleiss_metric,) = [m for m in admin.metric if m.label == "Fleiss' kappa"]
    with project.connect() as con:
        group, n_raters = users_store.group_agreement(con)
        ((_, _, n, kappa),) = users_store.agreement(con)
    assert group.items == 7 and n_raters == 2 and n == 7
    assert fleiss_metric.value == f"{group.kappa:.2f}"
    cohen = [d.value for d in admin.dataframe if "Cohen's kappa" in d.value.columns]
    assert len(cohen) == 1 and list(cohen[0]["shared pairs"]) == [7]
    assert list(cohen[0]["Cohen's kappa"]) == pytest.approx([kappa])
    assert any("7 pairs decided by 2 reviewers" in c.value for c in admin.caption)

    amy = reviewers_page("amy")
    assert not amy.metric and len(amy.dataframe) == 1  # only her own progress
    assert "kappa" not in _page_text(amy).lower()
