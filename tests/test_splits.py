"""The run's train/validation split is the same whether sources are held in memory or streamed."""

from llmkit.config import DataConfig
from llmkit.data.splits import SplitCorpus


def test_streamed_split_equals_in_memory_split(tmp_path):
    d = tmp_path / "docs"
    d.mkdir()
    for i in range(60):
        (d / f"{i:02d}.txt").write_text(f"Document {i}: 白日依山尽，黄河入海流。 The rest is silence {i * 7}.")
    (tmp_path / "extra.txt").write_text("One more document, in a second source. 欲穷千里目，更上一层楼。")
    sources = [str(d), str(tmp_path / "extra.txt")]
    memory = SplitCorpus(DataConfig(sources=sources, val_fraction=0.2), seed=3)
    streamed = SplitCorpus(DataConfig(sources=sources, val_fraction=0.2, streaming=True), seed=3)
    assert streamed.val == {}  # nothing read before the collecting pass
    mem_train = list(memory.train_documents(collect_validation=True))
    str_train = list(streamed.train_documents(collect_validation=True))
    assert mem_train == str_train
    assert memory.val["docs"] == streamed.val["docs"] and len(memory.val["docs"]) > 3
    assert memory.summary()[str(d)]["val_documents"] == streamed.summary()[str(d)]["val_documents"]
    # a pass that does not collect leaves the counts alone
    list(streamed.train_documents())
    assert streamed.summary() == memory.summary()
