"""Subject-level splits: no leakage, exact fractions, nesting, clear errors."""
import numpy as np
import pytest

from sleepfm.exceptions import DataWarning
from sleepfm.splits import few_shot, few_shot_epochs, label_fraction, subject_split


@pytest.fixture
def cohort():
    """100 subjects with 1-3 nights each, records in a shuffled order."""
    rng = np.random.default_rng(0)
    ids = np.repeat([f"S{i:03d}" for i in range(100)], rng.integers(1, 4, 100))
    return ids[rng.permutation(ids.size)]


def test_subject_split_has_no_leakage_and_covers_every_record(cohort):
    split = subject_split(cohort, test_size=0.2, val_size=0.1, seed=3)
    subjects = {k: set(cohort[v]) for k, v in split.items()}
    assert not subjects["train"] & subjects["test"]
    assert not subjects["train"] & subjects["val"]
    assert not subjects["val"] & subjects["test"]
    assert [len(subjects[k]) for k in ("train", "val", "test")] == [70, 10, 20]
    every = np.concatenate(list(split.values()))
    np.testing.assert_array_equal(np.sort(every), np.arange(cohort.size))
    assert all(np.all(np.diff(v) > 0) for v in split.values())


def test_subject_split_is_deterministic_and_order_free(cohort):
    a = subject_split(cohort, seed=1)
    b = subject_split(cohort, seed=1)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    order = np.random.default_rng(5).permutation(cohort.size)
    c = subject_split(cohort[order], seed=1)
    assert set(cohort[order][c["test"]]) == set(cohort[a["test"]])
    assert set(cohort[subject_split(cohort, seed=2)["test"]]) != set(cohort[a["test"]])


def test_small_cohort_gets_at_least_one_subject_per_set():
    split = subject_split(["a", "b", "c"], test_size=0.1, val_size=0.1)
    assert [split[k].size for k in ("train", "val", "test")] == [1, 1, 1]
    assert subject_split(["a", "b"], val_size=0)["val"].size == 0


@pytest.mark.parametrize(
    "ids, kwargs, match",
    [
        ([], {}, "empty"),
        (["a", "b"], {}, "Too few subjects"),
        (["a", "b", "c"], {"test_size": 1.2}, "test_size"),
        (["a", "b", "c"], {"test_size": 0.6, "val_size": 0.5}, "no training subjects"),
    ],
)
def test_subject_split_errors(ids, kwargs, match):
    with pytest.raises(ValueError, match=match):
        subject_split(ids, **kwargs)


def test_label_fraction_counts_subjects_and_nests(cohort):
    train = subject_split(cohort, seed=0)["train"]
    n_train = len(set(cohort[train]))
    kept = {f: label_fraction(train, cohort, f, seed=4) for f in (0.1, 0.2, 0.5, 1.0)}
    assert len(set(cohort[kept[0.1]])) == round(0.1 * n_train) == 7
    np.testing.assert_array_equal(kept[1.0], train)
    for small, large in ((0.1, 0.2), (0.2, 0.5), (0.5, 1.0)):
        assert set(kept[small]) <= set(kept[large])
    # every night of a kept subject comes along, and nothing outside train
    subjects = set(cohort[kept[0.2]])
    assert set(kept[0.2]) == {i for i in train if cohort[i] in subjects}
    assert label_fraction(train, cohort, 0.001).size >= 1


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_label_fraction_rejects_bad_fraction(cohort, fraction):
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        label_fraction(np.arange(10), cohort, fraction)


def test_few_shot_nights(cohort):
    train = subject_split(cohort, seed=0)["train"]
    picks = [few_shot(train, cohort, k, seed=2) for k in (1, 5, 20)]
    assert [p.size for p in picks] == [1, 5, 20]
    assert set(picks[0]) <= set(picks[1]) <= set(picks[2]) <= set(train)
    assert len(set(cohort[picks[2]])) == 20  # distinct subjects while they last
    every = few_shot(train, cohort, train.size)
    np.testing.assert_array_equal(every, np.sort(train))
    with pytest.raises(ValueError, match="between 1 and"):
        few_shot(train, cohort, train.size + 1)


def test_few_shot_epochs_keeps_k_per_class():
    rng = np.random.default_rng(1)
    y = [rng.integers(-1, 5, 300) for _ in range(4)]
    y[0][:5] = 4  # make sure every class is plentiful
    few = few_shot_epochs(y, 3, seed=0)
    assert [a.shape for a in few] == [a.shape for a in y]
    flat, orig = np.concatenate(few), np.concatenate(y)
    assert np.bincount(flat[flat >= 0], minlength=5).tolist() == [3] * 5
    assert np.all(flat[flat >= 0] == orig[flat >= 0])
    more = np.concatenate(few_shot_epochs(y, 10, seed=0))
    assert set(np.flatnonzero(flat >= 0)) <= set(np.flatnonzero(more >= 0))
    with pytest.warns(DataWarning, match="class 1 has only"):
        few_shot_epochs([np.array([0, 0, 0, 1])], 2)
