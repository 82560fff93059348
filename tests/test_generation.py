import pytest

from zerosearch_trl.generation import GenerationParams, TransformersGenerator
from zerosearch_trl.generation.base import truncate_at_stop


def test_greedy_batched_equals_one_by_one(tiny_model, tokenizer):
    prompts = ["short", "a much longer prompt with many more tokens in it", [{"role": "user", "content": "hi"}]]
    params = GenerationParams(max_new_tokens=8, temperature=0)
    batched = TransformersGenerator(tiny_model, tokenizer, batch_size=8).generate(prompts, params)
    single = TransformersGenerator(tiny_model, tokenizer, batch_size=1).generate(prompts, params)
    assert [g.token_ids for g in batched] == [g.token_ids for g in single]
    assert all(g.finish_reason in ("stop", "length") for g in batched)
    assert all(len(g.token_ids) <= 8 for g in batched)


def test_seeded_sampling_is_repeatable(tiny_model, tokenizer):
    generator = TransformersGenerator(tiny_model, tokenizer)
    params = GenerationParams(max_new_tokens=6, temperature=1.0, seed=3)
    assert [g.text for g in generator.generate(["x"] * 4, params)] == [
        g.text for g in generator.generate(["x"] * 4, params)
    ]


def test_a_seeded_call_leaves_the_global_rng_where_it_found_it(tiny_model, tokenizer):
    """A simulator in the policy's process generates with its own seed: the policy's draws must go on unreset."""
    import torch

    torch.manual_seed(5)
    expected = torch.rand(4)
    torch.manual_seed(5)
    TransformersGenerator(tiny_model, tokenizer).generate(["x"], GenerationParams(6, temperature=1.0, seed=3))
    assert torch.equal(torch.rand(4), expected)


def test_threads_get_the_same_seeded_samples_as_sequential_calls(tiny_model, tokenizer):
    """serve runs engine calls in a thread pool: concurrent seeded calls must not interleave torch's global RNG."""
    from concurrent.futures import ThreadPoolExecutor

    generator = TransformersGenerator(tiny_model, tokenizer)
    jobs = [([f"question {i}"] * 2, GenerationParams(max_new_tokens=12, temperature=1.0, seed=i)) for i in range(8)]
    sequential = [[g.token_ids for g in generator.generate(*job)] for job in jobs]
    original, active, overlaps = tiny_model.generate, [], []

    def watched(*args, **kwargs):
        active.append(1)
        overlaps.append(len(active))
        try:
            return original(*args, **kwargs)
        finally:
            active.pop()

    tiny_model.generate = watched
    try:
        with ThreadPoolExecutor(8) as pool:
            threaded = list(pool.map(lambda job: [g.token_ids for g in generator.generate(*job)], jobs))
    finally:
        del tiny_model.generate
    assert threaded == sequential
    assert max(overlaps) == 1 and len(overlaps) == len(jobs)


def test_chat_prompts_use_the_chat_template(tiny_model, tokenizer):
    rendered = TransformersGenerator(tiny_model, tokenizer).render([{"role": "user", "content": "hello"}])
    assert rendered.startswith("<|im_start|>") and rendered.endswith("<|im_start|>assistant\n")


def test_truncate_at_stop():
    assert truncate_at_stop("a </search> b </answer>", ("</answer>", "</search>")) == ("a </search>", True)
    assert truncate_at_stop("nothing", ("</search>",)) == ("nothing", False)


@pytest.mark.parametrize("kwargs", [{"max_new_tokens": 0}, {"temperature": -1}, {"top_p": 0}])
def test_bad_params_are_named(kwargs):
    (name,) = kwargs
    with pytest.raises(ValueError, match=name):
        GenerationParams(**kwargs)


def test_bad_batch_size(tiny_model, tokenizer):
    with pytest.raises(ValueError, match="batch_size"):
        TransformersGenerator(tiny_model, tokenizer, batch_size=0)


def test_per_prompt_seeds_sample_each_prompt_alike_wherever_it_sits_in_the_batch(tiny_model, tokenizer):
    """A simulator passes a seed per search: a search's documents must follow its seed alone, not its batch."""
    prompts = ["short", "a much longer prompt with many more tokens in it", "a middling prompt"]
    params = GenerationParams(max_new_tokens=10, temperature=1.0, top_p=0.95)
    generator = TransformersGenerator(tiny_model, tokenizer)
    batch = generator.generate(prompts, params, seeds=[5, 6, 7])
    alone = [generator.generate([prompt], params, seeds=[seed])[0] for prompt, seed in zip(prompts[1:], (6, 7))]
    assert [g.token_ids for g in alone] == [g.token_ids for g in batch[1:]]  # no padding, other neighbours
    in_pairs = TransformersGenerator(tiny_model, tokenizer, batch_size=2).generate(prompts, params, seeds=[5, 6, 7])
    assert [g.token_ids for g in in_pairs] == [g.token_ids for g in batch]
    twice = generator.generate([prompts[0]] * 2, params, seeds=[9, 9])  # one seed twice: a stream each
    assert twice[0].token_ids != twice[1].token_ids
    assert twice[0].token_ids == generator.generate(prompts[:1], params, seeds=[9])[0].token_ids
    assert generator.generate(prompts[:1], params, seeds=[10])[0].token_ids != twice[0].token_ids
    with pytest.raises(ValueError, match="Got 1 seeds for 2 prompts"):
        generator.generate(prompts[:2], params, seeds=[1])


def test_per_prompt_seeds_leave_greedy_and_unseeded_prompts_as_they_were(tiny_model, tokenizer):
    generator = TransformersGenerator(tiny_model, tokenizer)
    prompts = ["short", "a much longer prompt with many more tokens in it"]
    greedy = GenerationParams(max_new_tokens=8, temperature=0)
    assert [g.token_ids for g in generator.generate(prompts, greedy, seeds=[1, 2])] == [
        g.token_ids for g in generator.generate(prompts, greedy)
    ]
    sampled = GenerationParams(max_new_tokens=8, temperature=1.0, seed=4)
    mixed = [g.token_ids for g in generator.generate(prompts, sampled, seeds=[None, 3])]
    assert mixed == [g.token_ids for g in generator.generate(prompts, sampled, seeds=[None, 3])]  # params.seed
    assert mixed[1] == generator.generate(prompts[1:], sampled, seeds=[3])[0].token_ids
