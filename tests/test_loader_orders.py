"""shared.data.ResumableLoader: the batch order of every kind of data is the recorded one, resumption is exact,
and the states of the two former loaders (map-style DatasetLoader, stream-only ResumableLoader) still resume."""
import json
import sys
from pathlib import Path

import pytest
import torch

from shared.data import BucketBatchSampler, FolderSource, PermutationBatches, ResumableLoader, TooManyBadSamples

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
import loader_orders  # noqa: E402
from loader_orders import Indexed, _epochs, _ids, _write_folder  # noqa: E402

GOLDEN = Path(__file__).parent / "data" / "loader_orders.json"


def test_every_batch_order_is_the_recorded_one(tmp_path):
    """tensors, datasets (0/2 workers, bad items), aspect buckets, Trainer.loader(), folders, shards, LMDB: the
    order each of the two former loaders gave (recorded before they merged), batch for batch."""
    want = json.loads(GOLDEN.read_text())
    got = loader_orders.golden(tmp_path)
    assert sorted(got) == sorted(want)
    differ = [k for k in want if got[k] != want[k]]
    assert not differ, f"{len(differ)} of {len(want)} cases changed order, e.g. {differ[:5]}"


def test_permutation_batches_follow_their_formula():
    """Global batch g of an epoch is perm[g*B*W : (g+1)*B*W], perm = randperm(n) seeded seed*1_000_003 + epoch,
    and rank r takes its r-th slice of B (what the toy tables' batch order is)."""
    n, batch, world, seed = 50, 3, 2, 7
    for epoch in range(2):
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch)).tolist()
        for rank in range(world):
            want = [perm[g * batch * world + rank * batch:][:batch] for g in range(n // (batch * world))]
            got = [b.tolist() for b in PermutationBatches(n, batch, seed, rank=rank, world_size=world).batches(epoch)]
            assert got == want


def _resume_after(make, k):
    """The batches after the first k of two epochs, through a JSON round trip of the state (a checkpoint)."""
    a = make()
    it = iter(a)
    for _ in range(k):
        next(it)
    state = json.loads(json.dumps(a.state_dict()))
    b = make()
    b.load_state_dict(state)
    return [_ids(x) for x in b] + _epochs(b, 1), b


@pytest.mark.parametrize("kind", ["tensor", "dataset", "dataset_workers", "buckets", "folder"])
def test_mid_epoch_resume_gives_exactly_the_uninterrupted_rest(tmp_path, kind):
    folder = _write_folder(tmp_path / "f", 23) if kind == "folder" else None
    buckets = [(i * 7) % 5 for i in range(60)]

    def make():
        kw = dict(seed=3, rank=1, world_size=2, max_skip_rate=1.0)
        if kind == "tensor":
            return ResumableLoader(torch.arange(50), 4, drop_last=True, **kw)
        if kind.startswith("dataset"):
            return ResumableLoader(Indexed(50, bad=(5, 30)), 4, num_workers=2 if kind.endswith("workers") else 0,
                                   **kw)
        if kind == "buckets":
            sampler = BucketBatchSampler(buckets, 3, seed=3, rank=1, world_size=2)
            return ResumableLoader(Indexed(60, buckets=buckets), 3, batch_sampler=sampler, **kw)
        return ResumableLoader(FolderSource(folder), 2, **kw)

    whole = make()
    full = _epochs(whole, 2)
    rest, resumed = _resume_after(make, 3)
    assert rest == full[3:] and resumed.epoch == 2
    assert resumed.skips.to_dict() == whole.skips.to_dict()  # skips before the checkpoint came with the state


def test_states_of_the_former_loaders_resume(tmp_path):
    """Checkpoints written before the merge: DatasetLoader's {epoch, batch, seed, num_items, ...} (and sd_flux_lab's
    older BucketBatches without the layout) and the stream loader's version 1."""
    data = torch.arange(50)
    full = _epochs(ResumableLoader(data, 8, seed=1, drop_last=True), 1)
    old_map = {"epoch": 0, "batch": 2, "seed": 1, "num_items": 50, "batch_size": 8, "world_size": 1,
               "skips": {"seen": 0}}
    for state in (old_map, {k: v for k, v in old_map.items() if k not in ("batch_size", "world_size")}):
        loader = ResumableLoader(data, 8, seed=1, drop_last=True)
        loader.load_state_dict(state)
        assert [_ids(b) for b in loader] == full[2:]
    folder = _write_folder(tmp_path / "f", 9)
    full = _epochs(ResumableLoader(FolderSource(folder), 2, seed=4), 1)
    a = ResumableLoader(FolderSource(folder), 2, seed=4)
    it = iter(a)
    next(it)
    v1 = {k: v for k, v in a.state_dict().items() if k != "batch_size"} | {"version": 1}
    b = ResumableLoader(FolderSource(folder), 2, seed=4)
    b.load_state_dict(v1)
    assert [_ids(x) for x in b] == full[1:]
    with pytest.raises(ValueError, match="loader state version 9"):
        b.load_state_dict({**v1, "version": 9})


def test_mid_epoch_resume_checks_the_split():
    data = torch.arange(50)
    a = ResumableLoader(data, 4, seed=1)
    it = iter(a)
    next(it)
    with pytest.raises(ValueError, match="seed: saved 1, now 2"):
        ResumableLoader(data, 4, seed=2).load_state_dict(a.state_dict())
    with pytest.raises(ValueError, match="fingerprint: saved 'items:50', now 'items:40'"):
        ResumableLoader(data[:40], 4, seed=1).load_state_dict(a.state_dict())
    # another batch layout: the position means other samples, so the next epoch starts (the order is (seed, epoch))
    other = ResumableLoader(data, 5, seed=1)
    other.load_state_dict(a.state_dict())
    assert (other.epoch, other.positions) == (1, [0])
    epoch_end = ResumableLoader(data, 4, seed=1)
    list(epoch_end)
    fresh = ResumableLoader(data[:40], 4, seed=2)  # at an epoch boundary anything may change
    fresh.load_state_dict(epoch_end.state_dict())
    assert fresh.epoch == 1


def test_one_state_format_and_one_bad_data_path(tmp_path):
    folder = _write_folder(tmp_path / "f", 6)
    keys = {"version", "epoch", "positions", "seed", "shuffle", "fingerprint", "rank", "world_size", "num_workers",
            "batch_size", "shuffle_buffer", "skips"}
    assert set(ResumableLoader(torch.arange(8), 2).state_dict()) == keys
    assert set(ResumableLoader(FolderSource(folder), 2, num_workers=2).state_dict()) == keys
    with pytest.raises(TooManyBadSamples, match=r"(?s)4 of 8 samples were bad .*item0\.png"):
        list(ResumableLoader(Indexed(8, bad=(0, 1, 2, 3)), 2, shuffle=False, max_skip_rate=0.3))
    (folder / "000.png").write_bytes(b"not a png")
    with pytest.raises(TooManyBadSamples, match=r"(?s)1 of 6 samples were bad .*000\.png"):
        list(ResumableLoader(FolderSource(folder), 2, max_skip_rate=0.1))


def test_options_of_one_kind_of_data_are_refused_for_the_other(tmp_path):
    folder = _write_folder(tmp_path / "f", 4)
    with pytest.raises(ValueError, match="batch_sampler is for map-style data"):
        ResumableLoader(FolderSource(folder), 2, batch_sampler=BucketBatchSampler([0] * 4, 2))
    with pytest.raises(ValueError, match="uncond_p drops captions of streamed sources"):
        ResumableLoader(torch.arange(4), 2, uncond_p=0.1)
    with pytest.raises(TypeError, match="no fixed number of batches"):
        len(ResumableLoader(FolderSource(folder), 2))
    with pytest.raises(ValueError, match="no bucket holds a full batch of 4 x 1 processes .*lower batch_size"):
        ResumableLoader(Indexed(3, buckets=[0, 1, 2]), 4, batch_sampler=BucketBatchSampler([0, 1, 2], 4))
