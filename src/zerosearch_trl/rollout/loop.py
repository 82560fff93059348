"""Multi-turn search rollout for TRL's ``GRPOTrainer``: ``GRPOTrainer(..., rollout_func=make_search_rollout(engine))``.

One call plays a whole batch of episodes; each advances on its own (see :mod:`~zerosearch_trl.rollout.scheduler`):

1. the policy writes a turn, stopping at ``</search>``, ``</answer>``, EOS, or an ``<information>`` it starts
   writing itself (an invalid action); the generated token ids are kept as they are, never decoded and re-encoded;
2. a search joins the searches pending at that moment, and they go to the engine in ONE batched ``engine.search``
   call, each request carrying its own row's question and gold answers;
3. the ``<information>`` observation (or a corrective message after an invalid action) is appended as tokens
   with ``env_mask = 0``, so it is excluded from the loss, and the episode's next turn is submitted at once;
4. after ``max_turns`` search turns a row gets one final turn to answer; a search written in that turn is not
   executed. A finished episode ends with the EOS token, so that TRL does not count it as truncated.

The policy generates with whatever the trainer is configured for, with no extra flag (:mod:`.policy`): HF
generation on the trainer's model, or vLLM when ``use_vllm=True`` (``vllm_mode="colocate"``: the trainer's
in-process engine, request by request; ``"server"``: ``trl vllm-serve`` through TRL's client, the main process
generating for all, in lockstep). The vLLM paths return the sampling logprobs of the model's tokens (observation
positions hold 0.0 and are masked), which TRL's importance-sampling correction needs; HF returns ``None``, as TRL's.

Besides TRL's keys, the returned dict holds per row what reward functions receive as keyword lists:
``policy_turns`` (the text of each turn the policy generated: rewards read it, never the observations),
``num_searches``, ``search_queries``, ``noisy_fraction``, ``invalid_actions`` and ``well_formed``.

Questions and gold answers come from the trainer's datasets (rows made by :func:`~zerosearch_trl.load_qa_dataset`),
looked up by prompt; TRL passes each prompt ``num_generations`` times, and each copy is its own episode.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import replace
from typing import Any

from zerosearch_trl.engines.base import Document, SearchEngine, SearchRequest
from zerosearch_trl.environment import SimulatedSearchEnv
from zerosearch_trl.generation.base import Generation, GenerationParams
from zerosearch_trl.generation.transformers import eos_token_ids
from zerosearch_trl.prompts import THINK_PREFILL, render_policy_prompt
from zerosearch_trl.protocol import (
    INVALID_ACTION_FEEDBACK,
    OBSERVATION_CLOSE,
    OBSERVATION_OPEN,
    STOP_STRINGS,
    parse_action,
    render_documents,
    render_observation,
)
from zerosearch_trl.rollout.episode import (
    DEFAULT_OBSERVATION_TOKENS,
    DEFAULT_TURN_TOKENS,
    Episode,
    GenerateIds,
    check_episode_budget,
    check_turn_budgets,
    is_well_formed_episode,
)
from zerosearch_trl.rollout.metrics import engine_counters, log_search_metrics
from zerosearch_trl.rollout.policy import (
    check_generation_flags,
    colocated_vllm_awake,
    policy_backend,
    turn_generator,
)
from zerosearch_trl.rollout.registry import GoldRegistry
from zerosearch_trl.rollout.scheduler import EpisodeScheduler, LockstepTurns, SearchQueue, TurnGenerator
from zerosearch_trl.rollout.seeding import RolloutSeeds

logger = logging.getLogger(__name__)


class SearchRollout:
    """TRL ``rollout_func`` that plays multi-turn search episodes against ``engine``.

    Build it with :func:`make_search_rollout`; call it as TRL does, ``rollout(prompts, trainer)``.

    Example:
        >>> class NoResults:  # any search engine
        ...     name, top_k = "none", 1
        ...     def search(self, requests):
        ...         return [[] for _ in requests]
        >>> rollout = make_search_rollout(NoResults(), max_turns=3)
        >>> isinstance(rollout, SearchRollout), rollout.max_turns, rollout.prefill
        (True, 3, '<think>')
    """

    def __init__(
        self,
        engine: SearchEngine | SimulatedSearchEnv,
        *,
        max_turns: int = 2,
        max_turn_tokens: int = DEFAULT_TURN_TOKENS,
        max_observation_tokens: int = DEFAULT_OBSERVATION_TOKENS,
        prefill: str | None = THINK_PREFILL,
        datasets: Iterable[Any] = (),
        continuous_batching: bool | None = None,
        mask_observations: bool = True,
    ) -> None:
        if isinstance(engine, SimulatedSearchEnv):  # the tool environment's engine serves the tag protocol too
            engine = engine.engine
        if engine is None or not callable(getattr(engine, "search", None)):
            raise ValueError(
                f"make_search_rollout needs a search engine with a batched search() method, got {engine!r}; "
                "e.g. SimulatedSearchEngine(TransformersGenerator(model, tokenizer))."
            )
        if not isinstance(max_turns, int) or max_turns < 0:
            raise ValueError(f"max_turns must be an integer >= 0 (searches before the answer turn), got {max_turns!r}.")
        check_turn_budgets(max_turn_tokens, max_observation_tokens)
        self.engine, self.max_turns, self.prefill = engine, max_turns, prefill
        self.max_turn_tokens, self.max_observation_tokens = max_turn_tokens, max_observation_tokens
        self.continuous_batching, self.mask_observations = continuous_batching, mask_observations
        self.engine_failures = 0
        self._budget_warned = False
        self.seeds = RolloutSeeds()
        self.chat_template_kwargs: dict[str, Any] = {}  # GRPOConfig's, read at each call
        self.have_logprobs = False  # set per call: True on the vLLM paths
        self._eos_ids: set[int] = set()
        self.golds = GoldRegistry()
        for dataset in datasets:
            self.register(dataset)

    def register(self, dataset: Any) -> None:
        """Learn the question and gold answers of every row of ``dataset`` (see
        :class:`~zerosearch_trl.rollout.registry.GoldRegistry`); the trainer's own train and eval datasets are
        registered automatically."""
        self.golds.register(dataset)

    def __call__(self, prompts: list[Any], trainer: Any) -> dict[str, Any]:
        """Play one episode per prompt and return TRL's rollout dict (see the module docstring)."""
        self.register(getattr(trainer, "train_dataset", None))
        self.register(getattr(trainer, "eval_dataset", None))
        tokenizer = trainer.processing_class
        args = trainer.args
        self.check_budget(args.max_completion_length)
        check_generation_flags(args)
        self.chat_template_kwargs = getattr(args, "chat_template_kwargs", None) or {}
        episodes = [self.start_episode(prompt, tokenizer) for prompt in prompts]
        self._check_context(episodes, trainer)
        unknown = sum(e.question is None for e in episodes)
        if unknown:
            logger.warning(
                "%d of %d prompts are not in the registered datasets: their searches carry no question "
                "or gold answers (register the dataset with rollout.register(dataset)).",
                unknown,
                len(prompts),
            )
        params = GenerationParams(
            max_new_tokens=args.max_completion_length,
            temperature=args.temperature,
            top_p=args.top_p,
            top_k=args.top_k or None,
            min_p=getattr(args, "min_p", None),
            repetition_penalty=args.repetition_penalty,
            stop=STOP_STRINGS,
        )
        sampling_seed = self.seeds.start(self.engine, trainer)
        counters_before = engine_counters(self.engine)
        backend = policy_backend(trainer)
        self.have_logprobs = backend != "hf"
        if not self.mask_observations and backend != "hf":
            raise ValueError(
                "mask_observations=False (the loss-mask ablation) runs on HF generation only: on the vLLM paths the "
                "observation tokens have no sampling logprobs for TRL's importance-sampling correction. Set "
                "use_vllm=False, or keep mask_observations=True."
            )
        eos_ids = eos_token_ids(trainer.model, tokenizer)
        with ExitStack() as stack:
            if backend == "colocate":
                stack.enter_context(colocated_vllm_awake(trainer))
            generate = turn_generator(trainer, tokenizer, backend, eos_ids, stack, self.continuous_batching)
            if isinstance(generate, TurnGenerator):
                # Each turn then samples from a seed of its own (this one's, its episode's and its length's), so an
                # episode's tokens do not depend on when its searches came back or which rows decoded beside it.
                params = replace(params, seed=sampling_seed)
            searches = self.play(
                episodes,
                generate,
                params,
                tokenizer,
                args.max_completion_length,
                eos_ids=eos_ids,
                # In lockstep, every process takes part in every turn, even with no live row of its own:
                # generation gathers parameters (ZeRO-3, FSDP) or rows (server mode) collectively.
                collective=trainer.accelerator.num_processes > 1 and not isinstance(generate, TurnGenerator),
            )
        well_formed = [is_well_formed_episode(e) for e in episodes]
        log_search_metrics(trainer, episodes, well_formed, counters_before, engine_counters(self.engine), searches)
        return {
            "prompt_ids": [e.prompt_ids for e in episodes],
            "completion_ids": [e.completion_ids for e in episodes],
            "logprobs": [e.logprobs for e in episodes] if self.have_logprobs else None,
            "env_mask": [e.env_mask if self.mask_observations else e.mask_with_retrieved() for e in episodes],
            "policy_turns": [list(e.policy_turns) for e in episodes],
            "num_searches": [len(e.search_queries) for e in episodes],
            "search_queries": [list(e.search_queries) for e in episodes],
            "noisy_fraction": [e.noisy_searches / len(e.search_queries) if e.search_queries else 0.0 for e in episodes],
            "invalid_actions": [e.invalid_actions for e in episodes],
            "well_formed": well_formed,
        }

    def play(
        self,
        episodes: list[Episode],
        generate: GenerateIds | TurnGenerator,
        params: GenerationParams,
        tokenizer: Any,
        max_length: int,
        *,
        eos_ids: Iterable[int],
        collective: bool = False,
        first: int = 0,
    ) -> SearchQueue:
        """Play ``episodes`` to their end; training and evaluation share this loop (see
        :mod:`~zerosearch_trl.rollout.scheduler`).

        Args:
            episodes: from :meth:`start_episode`; they are extended in place.
            generate: a :class:`~zerosearch_trl.rollout.scheduler.TurnGenerator` (each episode's turns go as soon
                as they are ready, searches run while the policy generates), or one batched generation from token
                ids (every live episode's turn together, then their searches: the synchronous rollout; it returns
                ``None`` when no process has a live row).
            params: sampling parameters; a turn may use ``max_turn_tokens``, or what its episode has left if less.
            tokenizer: the policy's tokenizer (observations are tokenised with it).
            max_length: completion budget in tokens, observations included (one is kept for the final EOS); see
                :meth:`check_budget`.
            eos_ids: every token id that ends a generation.
            collective: keep calling ``generate`` with no live rows (processes that generate together); only with
                a batched ``generate``.
            first: the number of ``episodes[0]`` among all that the caller plays with one ``params.seed`` (an
                evaluation's batches): each turn's sampling seed and each search's draw key on it.

        Returns:
            The search queue, for its counts (engine calls, requests, fallbacks).
        """
        self._eos_ids = set(eos_ids)
        continuous = isinstance(generate, TurnGenerator)
        turns = generate if continuous else LockstepTurns(generate, params, collective=collective)
        searches = SearchQueue(self.engine, threaded=continuous)

        def next_turn(index: int) -> tuple[list[int], GenerationParams] | None:
            episode = episodes[index - first]
            if episode.done:
                return None
            room = max(self._turn_room(episode, max_length), 1)
            return episode.prompt_ids + episode.completion_ids, replace(params, max_new_tokens=room)

        def turn_done(index: int, generation: Generation) -> str | None:
            episode = episodes[index - first]  # its turns so far say whether this is the answer turn
            return self._take_turn(episode, generation, episode.turns == self.max_turns, tokenizer, max_length)

        def make_request(index: int, query: str) -> SearchRequest:
            episode = episodes[index - first]  # the engine's draws key on this search of this episode, not its batch
            draw_key = f"{index}|{len(episode.search_queries)}"
            return SearchRequest(query, episode.question, episode.golden_answers, draw_key=draw_key)

        scheduler = EpisodeScheduler(
            turns,
            searches,
            next_turn=next_turn,
            turn_done=turn_done,
            search_done=lambda index, query, documents: self._observe_search(
                episodes[index - first], query, documents, tokenizer, max_length
            ),
            make_request=make_request,
        )
        try:
            scheduler.run(range(first, first + len(episodes)))
        finally:
            turns.reset()  # nothing of these episodes stays in a generator that plays more of them later
            searches.close()
            self.engine_failures += searches.failures
        eos_id = tokenizer.eos_token_id
        for episode in episodes:
            # A finished episode ends with EOS (added by us, so masked); a truncated one must not.
            if not episode.truncated and not (episode.completion_ids and episode.completion_ids[-1] in self._eos_ids):
                episode.extend([eos_id], from_model=False)
        return searches

    def start_episode(self, prompt: Any, tokenizer: Any) -> Episode:
        """A new episode for ``prompt`` (chat messages or text), with its registered question and gold answers."""
        if isinstance(prompt, str):
            text = prompt + (self.prefill or "")
        else:
            text = render_policy_prompt(tokenizer, prompt, self.prefill, self.chat_template_kwargs)
        question, golds = self.golds.lookup(prompt)
        return Episode(
            prompt_ids=tokenizer(text, add_special_tokens=False)["input_ids"], question=question, golden_answers=golds
        )

    @staticmethod
    def _check_context(episodes: list[Episode], trainer: Any) -> None:
        limit = getattr(getattr(trainer.model, "config", None), "max_position_embeddings", None)
        longest = max(len(e.prompt_ids) for e in episodes)
        completion = trainer.args.max_completion_length
        if limit is not None and longest + completion > limit:
            raise ValueError(
                f"A prompt is {longest} tokens long and completions may reach {completion} "
                f"(max_completion_length), but the model's context holds {limit} (config.max_position_embeddings): "
                "shorten the instruction or the question, or lower max_completion_length."
            )

    def _take_turn(
        self, episode: Episode, generation: Generation, final_turn: bool, tokenizer: Any, max_length: int
    ) -> str | None:
        """Append the generated tokens; return the query to run, if the turn searched."""
        episode_room = max_length - 1 - len(episode.completion_ids)
        room = min(self.max_turn_tokens, episode_room)
        episode.turns += 1
        episode.generation_errors += generation.finish_reason == "error"
        ids = list(generation.token_ids or [])
        kept = ids[:room]
        logprobs = generation.logprobs[:room] if generation.logprobs is not None else None
        if self.have_logprobs and logprobs is None:  # TRL reads None as NaN: no importance-sampling correction
            logprobs = [None] * len(kept)
        episode.extend(kept, from_model=True, logprobs=logprobs)
        text = tokenizer.decode(kept, skip_special_tokens=True)
        episode.policy_turns.append(text)
        ended = bool(kept) and kept[-1] in self._eos_ids
        unfinished = len(ids) > room or (generation.finish_reason == "length" and not ended)
        if unfinished and room == episode_room:  # the episode's whole budget is spent
            episode.done = episode.truncated = True
            return None
        action = parse_action(text)  # what was kept: a turn cut at max_turn_tokens acts on no more than that
        if action.kind == "answer":
            episode.done = True
        elif final_turn:
            episode.done = True  # no answer in the answer turn: a search written here is not run
        elif action.kind == "search":
            return action.content
        else:
            # No action (or a turn that ran out of max_turn_tokens first): the environment, not the model, ends
            # the episode, so a premature EOS is dropped and the policy is told how to act (the paper's
            # corrective observation).
            if ended:
                episode.drop_last()
            episode.invalid_actions += 1
            self._observe(
                episode, tokenizer(INVALID_ACTION_FEEDBACK, add_special_tokens=False)["input_ids"], max_length
            )
        return None

    def _turn_room(self, episode: Episode, max_length: int) -> int:
        return min(self.max_turn_tokens, max_length - 1 - len(episode.completion_ids))

    def _observe_search(
        self, episode: Episode, query: str, documents: list[Document], tokenizer: Any, max_length: int
    ) -> None:
        """Record a search's documents and append its ``<information>`` observation."""
        episode.search_queries.append(query)
        episode.documents.append(list(documents))
        episode.noisy_searches += any(d.meta.get("label") == "noisy" for d in documents)
        start = len(episode.completion_ids)
        self._observe(episode, self._observation_ids(episode, documents, tokenizer), max_length)
        episode.retrieved.append((start, len(episode.completion_ids)))

    def _observation_ids(self, episode: Episode, documents: list[Document], tokenizer: Any) -> list[int]:
        """The ``<information>`` block's tokens; a result over ``max_observation_tokens`` loses the end of its
        documents, never its closing tag (the episode goes on)."""
        ids = tokenizer(render_observation(documents), add_special_tokens=False)["input_ids"]
        if len(ids) <= self.max_observation_tokens:
            return ids
        opening, closing = (
            tokenizer(t, add_special_tokens=False)["input_ids"] for t in (OBSERVATION_OPEN, OBSERVATION_CLOSE)
        )
        body = tokenizer(render_documents(documents), add_special_tokens=False)["input_ids"]
        episode.observations_cut += 1
        return opening + body[: max(self.max_observation_tokens - len(opening) - len(closing), 0)] + closing

    @staticmethod
    def _observe(episode: Episode, ids: list[int], max_length: int) -> None:
        room = max_length - 1 - len(episode.completion_ids)
        episode.extend(ids[:room], from_model=False)
        if len(ids) >= room:  # nothing left to generate with
            episode.done = episode.truncated = True

    def check_budget(self, max_completion_length: int) -> None:
        """Warn once, naming the numbers, when ``max_completion_length`` (the whole episode's tokens, observations
        included) cannot hold ``max_turns`` searches and the answer turn (see
        :func:`~zerosearch_trl.rollout.episode.episode_budget`): such episodes can be cut off before their answer.
        ``zerosearch-trl train`` refuses that setting outright; here it may be deliberate (a memory cap)."""
        if not isinstance(max_completion_length, int) or max_completion_length < 2:
            raise ValueError(
                "The search rollout needs max_completion_length >= 2 (room for a turn and the closing EOS), got "
                f"{max_completion_length!r}."
            )
        try:
            check_episode_budget(
                max_completion_length, self.max_turns, self.max_turn_tokens, self.max_observation_tokens
            )
        except ValueError as error:
            if not self._budget_warned:
                logger.warning("%s", error)
                self._budget_warned = True


def make_search_rollout(
    engine: SearchEngine | SimulatedSearchEnv,
    *,
    max_turns: int = 2,
    max_turn_tokens: int = DEFAULT_TURN_TOKENS,
    max_observation_tokens: int = DEFAULT_OBSERVATION_TOKENS,
    prefill: str | None = THINK_PREFILL,
    datasets: Iterable[Any] = (),
    continuous_batching: bool | None = None,
    mask_observations: bool = True,
) -> SearchRollout:
    """Build the multi-turn search ``rollout_func`` for ``GRPOTrainer``.

    The episode's budgets are separate, as in the paper: each turn the policy writes gets ``max_turn_tokens``
    (a turn that runs out of them without an action is an invalid action, and the episode goes on); each search
    result gets ``max_observation_tokens`` (a longer one loses the end of its documents, not the episode); the
    whole completion, observations included, is ``GRPOConfig.max_completion_length``, which must hold
    ``max_turns`` searches and the answer: ``max_turns * (max_turn_tokens + max_observation_tokens) +
    max_turn_tokens + 1`` tokens (the rollout checks it and names the numbers).

    Args:
        engine: any search engine (simulated, real, cached, hybrid), or a :class:`SimulatedSearchEnv` (its engine).
        max_turns: search turns before the final answer turn (paper: 2).
        max_turn_tokens: model tokens per turn (paper: 500).
        max_observation_tokens: tokens per search result, ``<information>`` tags included (paper: 500).
        prefill: text that opens the assistant turn (``"<think>"`` by default; ``None`` for none); it belongs to
            the prompt ids.
        datasets: datasets whose rows give each prompt's question and gold answers; the trainer's train and eval
            datasets are added automatically.
        continuous_batching: ``None`` (default): each episode advances on its own through a continuous-batching
            generator where the trainer allows it (colocated vLLM; HF generation with every parameter on each
            process: one process, DDP, ZeRO-1/2, a model with full-attention caches), with its searches running
            while the policy generates; otherwise every live episode's turn is generated together (vLLM server
            mode, ZeRO-3, FSDP). ``False``: always the latter. ``True``: the former, or an error saying why.
        mask_observations: ``True`` (default, the paper's): the search results carry no loss (``env_mask = 0``).
            ``False`` is the ablation (Search-R1's "retrieved token masking" off): the ``<information>`` blocks
            are trained on like the policy's own tokens; corrective messages and the closing EOS stay masked.
            HF generation only.

    Example:
        >>> engine = SimulatedSearchEngine(TransformersGenerator(model, tokenizer))  # doctest: +SKIP
        >>> trainer = GRPOTrainer(model=model, reward_funcs=[f1_reward], train_dataset=dataset,
        ...                       rollout_func=make_search_rollout(engine), args=config)  # doctest: +SKIP
    """
    return SearchRollout(
        engine,
        max_turns=max_turns,
        max_turn_tokens=max_turn_tokens,
        max_observation_tokens=max_observation_tokens,
        prefill=prefill,
        datasets=datasets,
        continuous_batching=continuous_batching,
        mask_observations=mask_observations,
    )
