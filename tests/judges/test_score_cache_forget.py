"""A takedown's side of the score cache: `forget` drops every answer for a document's text, whole
or as cut for the judge (found through the recorded cut), under any model or rubric, and nothing else."""

from __future__ import annotations

from dagster_llmdata.judges.cache import CachedScore, CacheKey, ScoreCache, text_hash

ANSWER = CachedScore('{"score": 3, "reason": "quotes the text"}', 10, 5)


def test_forget_drops_whole_and_cut_texts_under_every_model_and_keeps_the_rest(tmp_path):
    removed_doc, kept_doc = "a document to take down " * 20, "a document that stays " * 20
    with ScoreCache(tmp_path) as cache:
        cache.put_many([(CacheKey.of(removed_doc, "m1", "edu", "1"), ANSWER),  # judged whole
                        (CacheKey.of(removed_doc[:64], "m2", "edu", "1"), ANSWER),  # judged cut, by another model
                        (CacheKey.of(kept_doc[:64], "m2", "edu", "1"), ANSWER)])
        cache.note_cuts([(text_hash(removed_doc), text_hash(removed_doc[:64])), (text_hash(kept_doc), text_hash(kept_doc[:64])),
                         (text_hash("same"), text_hash("same"))])  # an uncut text needs no record
        assert cache.forget([text_hash(removed_doc)]) == 2
        assert len(cache) == 1 and cache.get_many([CacheKey.of(kept_doc[:64], "m2", "edu", "1")])
        assert cache.forget([text_hash(removed_doc)]) == 0  # its cut record went with it
    with ScoreCache(tmp_path) as reopened:  # on disk, not just in this connection
        assert len(reopened) == 1 and reopened.forget([text_hash(kept_doc)]) == 1 and len(reopened) == 0
