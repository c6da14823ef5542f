"""``GroundedProposer``: instruction candidates grounded in the data, the program and demos.

DSPy 3.4.1's proposer, on native modules: for each predictor and each demo set it asks the
prompt model for a new instruction, given a summary of the dataset, a description of the
program and of the predictor's role in it, demos bootstrapped for it, and a prompting tip
drawn at random. The prompts, the calls and the draws from ``rng`` are DSPy's, in DSPy's
order, so the same seed sends the same LM requests.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass
from typing import Any

from dspex import settings
from dspex._sync import run_sync
from dspex.errors import ConfigurationError
from dspex.modules.predict import Predict
from dspex.primitives.module import Module
from dspex.primitives.prediction import Prediction
from dspex.propose.dataset_summary_generator import acreate_dataset_summary
from dspex.propose.propose_base import Proposer
from dspex.propose.utils import (
    create_example_string,
    create_predictor_level_history_string,
    get_dspy_source_code,
    strip_prefix,
)
from dspex.signatures import InputField, OutputField, Signature

__all__ = [
    "MAX_INSTRUCT_IN_HISTORY",
    "TIPS",
    "DescribeModule",
    "DescribeProgram",
    "GenerateModuleInstruction",
    "GroundedProposer",
    "generate_instruction_class",
]

logger = logging.getLogger(__name__)

MAX_INSTRUCT_IN_HISTORY = 5

TIPS = {
    "none": "",
    "creative": "Don't be afraid to be creative when creating the new instruction!",
    "simple": "Keep the instruction clear and concise.",
    "description": "Make sure your instruction is very informative and descriptive.",
    "high_stakes": "The instruction should include a high stakes scenario in which the LM must solve the task!",
    "persona": 'Include a persona that is relevant to the task in the instruction (ie. "You are a ...")',
}

_PROGRAM_CODE = "Pseudocode for a language model program designed to solve a particular task."
_PROGRAM_SUMMARY = (
    "Summary of the task the program is designed to solve, and how it goes about solving it."
)


class DescribeProgram(Signature):
    """Below is some pseudo-code for a pipeline that solves tasks with calls to language models. Please describe what type of task this program appears to be designed to solve, and how it appears to work."""

    program_code: str = InputField(desc=_PROGRAM_CODE)
    program_example: str = InputField(desc="An example of the program in use.")
    program_description: str = OutputField(
        desc="Describe what task the program is designed to solve, and how it goes about solving this task.",
    )


class DescribeModule(Signature):
    """Below is some pseudo-code for a pipeline that solves tasks with calls to language models. Please describe the purpose of one of the specified module in this pipeline."""

    program_code: str = InputField(desc=_PROGRAM_CODE)
    program_example: str = InputField(desc="An example of the program in use.")
    program_description: str = InputField(desc=_PROGRAM_SUMMARY)
    module: str = InputField(desc="The module in the program that we want to describe.")
    module_description: str = OutputField(
        desc="Description of the module's role in the broader program.",
    )


def generate_instruction_class(
    use_dataset_summary: bool = True,
    program_aware: bool = True,
    use_task_demos: bool = True,
    use_instruct_history: bool = True,
    use_tip: bool = True,
) -> Predict:
    """A ``Predict`` whose signature has only the inputs the flags ask for (DSPy's order)."""
    return Predict(
        _instruction_signature(
            use_dataset_summary, program_aware, use_task_demos, use_instruct_history, use_tip
        )
    )


@functools.lru_cache(maxsize=32)
def _instruction_signature(
    use_dataset_summary: bool,
    program_aware: bool,
    use_task_demos: bool,
    use_instruct_history: bool,
    use_tip: bool,
) -> type[Signature]:
    """The signature class for one combination of flags, built once (DSPy builds a new class
    per proposal; the class is never changed, and building it costs more than a request)."""

    class GenerateSingleModuleInstruction(Signature):
        """Use the information below to learn about a task that we are trying to solve using calls to an LM, then generate a new instruction that will be used to prompt a Language Model to better solve the task."""

        if use_dataset_summary:
            dataset_description: str = InputField(
                desc="A description of the dataset that we are using.",
            )
        if program_aware:
            program_code: str = InputField(
                desc="Language model program designed to solve a particular task.",
            )
            program_description: str = InputField(desc=_PROGRAM_SUMMARY)
            module: str = InputField(desc="The module to create an instruction for.")
            module_description: str = InputField(
                desc="Description of the module to create an instruction for.",
            )
        task_demos: str = InputField(desc="Example inputs/outputs of our module.")
        if use_instruct_history:
            previous_instructions: str = InputField(
                desc="Previous instructions we've attempted, along with their associated scores.",
            )
        basic_instruction: str = InputField(desc="Basic instruction.")
        if use_tip:
            tip: str = InputField(
                desc="A suggestion for how to go about generating the new instruction.",
            )
        proposed_instruction: str = OutputField(
            desc="Propose an instruction that will be used to prompt a Language Model to perform this task.",
        )

    return GenerateSingleModuleInstruction


class GenerateModuleInstruction(Module):
    """Describe the program and the module (if program-aware), then propose an instruction."""

    def __init__(
        self,
        program_code_string: str | None = None,
        use_dataset_summary: bool = True,
        program_aware: bool = False,
        use_task_demos: bool = True,
        use_instruct_history: bool = True,
        use_tip: bool = True,
        verbose: bool = False,
    ) -> None:
        super().__init__()
        self.use_dataset_summary = use_dataset_summary
        self.program_aware = program_aware
        self.use_task_demos = use_task_demos
        self.use_instruct_history = use_instruct_history
        self.use_tip = use_tip
        self.verbose = verbose
        self.program_code_string = program_code_string
        self.describe_program = Predict(DescribeProgram)
        self.describe_module = Predict(DescribeModule)
        self.generate_module_instruction = generate_instruction_class(
            use_dataset_summary=use_dataset_summary,
            program_aware=program_aware,
            use_task_demos=use_task_demos,
            use_instruct_history=use_instruct_history,
            use_tip=use_tip,
        )

    @staticmethod
    def _task_demos(
        demo_candidates: Any, pred_i: int, demo_set_i: int, fields: dict[str, Any], limit: int
    ) -> str:
        sets = demo_candidates[pred_i]
        ordered = [sets[demo_set_i], *sets[demo_set_i + 1 :], *sets[:demo_set_i]]

        def gather() -> Iterator[str]:
            count = 0
            for candidate_set in ordered:
                for example in candidate_set:
                    if "augmented" in example.keys():  # noqa: SIM118 (DSPy: keys(), a list)
                        yield create_example_string(fields, example)
                        count += 1
                        if count >= limit:
                            return

        return "\n\n".join(gather()) + "\n\n"

    def forward(self, *args: Any, **kwargs: Any) -> Prediction:
        """The proposal (see :meth:`aforward`), from sync code."""
        return run_sync(self.aforward(*args, **kwargs))

    async def aforward(
        self,
        demo_candidates: Any,
        pred_i: int,
        demo_set_i: int,
        program: Any,
        previous_instructions: str | None,
        data_summary: str | None,
        num_demos_in_context: int = 3,
        tip: str | None = None,
    ) -> Prediction:
        """Describe the program and the module (program-aware), then propose: DSPy's three
        calls, one after the other."""
        predictor = program.predictors()[pred_i]
        signature = predictor.signature
        basic_instruction = signature.instructions
        task_demos = ""
        if self.use_task_demos:
            task_demos = self._task_demos(
                demo_candidates, pred_i, demo_set_i, signature.fields, num_demos_in_context
            )
        if not task_demos.strip() or demo_set_i == 0:
            task_demos = "No task demos provided."

        program_description = "Not available"
        module_code = "Not provided"
        module_description = "Not provided"
        if self.program_aware:
            try:
                described = await self.describe_program.acall(
                    program_code=self.program_code_string, program_example=task_demos
                )
                program_description = strip_prefix(described.program_description)
                if self.verbose:
                    print(f"PROGRAM DESCRIPTION: {program_description}")
                inputs = [n for n, f in signature.fields.items() if _is_input(f)]
                outputs = [n for n, f in signature.fields.items() if not _is_input(f)]
                module_code = (
                    f"{type(predictor).__name__}({', '.join(inputs)}) -> {', '.join(outputs)}"
                )
                module_description = (
                    await self.describe_module.acall(
                        program_code=self.program_code_string,
                        program_description=program_description,
                        program_example=task_demos,
                        module=module_code,
                    )
                ).module_description
            except Exception as exc:
                logger.info("program description failed (%s); proposing without it", exc)
                if self.verbose:
                    print(
                        "Error getting program description. Running without program aware "
                        f"proposer. Error: {exc}"
                    )
                self.program_aware = False

        if self.verbose:
            print(f"task_demos {task_demos}")
        inputs_given = {
            "dataset_description": data_summary,
            "program_code": self.program_code_string,
            "module": module_code,
            "program_description": program_description,
            "module_description": module_description,
            "task_demos": task_demos,
            "tip": tip,
            "basic_instruction": basic_instruction,
            "previous_instructions": previous_instructions,
        }
        wanted = self.generate_module_instruction.signature.input_fields
        instruct = await self.generate_module_instruction.acall(
            **{name: value for name, value in inputs_given.items() if name in wanted}
        )
        return Prediction(proposed_instruction=strip_prefix(instruct.proposed_instruction))


def _is_input(field: Any) -> bool:
    return bool(field.json_schema_extra.get("__dspy_field_type") == "input")


class GroundedProposer(Proposer):
    """DSPy's ``GroundedProposer``: same arguments, prompts and draws from ``rng``."""

    def __init__(
        self,
        prompt_model: Any,
        program: Any,
        trainset: list[Any],
        view_data_batch_size: int = 10,
        use_dataset_summary: bool = True,
        program_aware: bool = True,
        use_task_demos: bool = True,
        num_demos_in_context: int = 3,
        use_instruct_history: bool = True,
        use_tip: bool = True,
        set_tip_randomly: bool = True,
        set_history_randomly: bool = True,
        verbose: bool = False,
        rng: Any = None,
        init_temperature: float = 1.0,
        *,
        num_threads: int | None = None,
        ground: bool = True,
    ) -> None:
        super().__init__()
        self.num_threads = num_threads
        """DSPex only: how many proposals run at once (DSPy: one at a time)."""
        self.program_aware = program_aware
        self.use_dataset_summary = use_dataset_summary
        self.use_task_demos = use_task_demos
        self.num_demos_in_context = num_demos_in_context
        self.use_instruct_history = use_instruct_history
        self.use_tip = use_tip
        self.set_tip_randomly = set_tip_randomly
        self.set_history_randomly = set_history_randomly
        self.verbose = verbose
        self.rng = rng or random
        self.prompt_model: Any = prompt_model if prompt_model else settings.current().lm
        self.init_temperature = init_temperature

        self.program_code_string: str | None = None
        self.data_summary: str | None = None
        self._summary_model = prompt_model
        if ground:
            self._ground_code(program)
            run_sync(self._ground_data(trainset, view_data_batch_size, None))

    # ------------------------------------------------------------------ grounding
    def _ground_code(self, program: Any) -> None:
        if not self.program_aware:
            return
        try:
            self.program_code_string = get_dspy_source_code(program)
            if self.verbose:
                print("SOURCE CODE:", self.program_code_string)
        except Exception as exc:
            logger.warning(
                "Error getting source code: %s. Running without program aware proposer.", exc
            )
            self.program_aware = False

    async def _ground_data(
        self, trainset: list[Any], view_data_batch_size: int, limiter: asyncio.Semaphore | None
    ) -> None:
        if not self.use_dataset_summary:
            return
        try:
            self.data_summary = await acreate_dataset_summary(
                trainset=trainset,
                view_data_batch_size=view_data_batch_size,
                prompt_model=self._summary_model,
                limiter=limiter,
            )
            if self.verbose:
                print(f"DATA SUMMARY: {self.data_summary}")
        except Exception as exc:
            logger.warning(
                "Error getting data summary: %s. Running without data aware proposer.", exc
            )
            self.use_dataset_summary = False

    async def aground(
        self,
        program: Any,
        trainset: list[Any],
        view_data_batch_size: int = 10,
        *,
        limiter: asyncio.Semaphore | None = None,
    ) -> None:
        """DSPex only, for a proposer made with ``ground=False``: what DSPy's constructor
        does (the program's source, the dataset summary), the source read in a worker thread
        while the summary's requests (each waiting for a slot of ``limiter``) are answered."""
        code = asyncio.ensure_future(asyncio.to_thread(self._ground_code, program))
        try:
            await self._ground_data(trainset, view_data_batch_size, limiter)
        finally:
            await code

    # ------------------------------------------------------------------ proposing
    def propose_instructions_for_program(
        self,
        trainset: list[Any],
        program: Any,
        demo_candidates: Any,
        trial_logs: dict[Any, Any],
        N: int,
    ) -> dict[int, list[str]]:
        """``N`` instructions (at most one per demo set) for every predictor of ``program``.

        Every draw from ``rng`` (history flag, tips, rollout ids) is made first, in DSPy's
        order; the proposals then run, at most ``num_threads`` at a time (DSPex only; one at a
        time by default, as DSPy does). Either way the LM requests are DSPy's."""
        return run_sync(
            self.apropose_instructions_for_program(
                trainset, program, demo_candidates, trial_logs, N
            )
        )

    async def apropose_instructions_for_program(
        self,
        trainset: list[Any],
        program: Any,
        demo_candidates: Any,
        trial_logs: dict[Any, Any],
        N: int,
        *,
        limiter: asyncio.Semaphore | None = None,
    ) -> dict[int, list[str]]:
        """:meth:`propose_instructions_for_program` for async callers; ``limiter``: a bound
        on the proposals running at once shared with other work (else ``num_threads``)."""
        predictors = program.predictors()
        draws = self.draw_proposals(
            len(predictors), bool(demo_candidates), _num_sets(demo_candidates), N
        )
        proposals = [self._build(program, draw, demo_candidates, trial_logs) for draw in draws]
        texts = await _run_all(proposals, self.num_threads, limiter)
        return _by_predictor(draws, texts)

    def draw_proposals(
        self, num_predictors: int, with_demos: bool, num_sets: int, N: int
    ) -> list[_Draw]:
        """DSPex only: every draw from ``rng`` of :meth:`apropose_instructions_for_program`
        (the history flag, then each proposal's tip and rollout id), in DSPy's order, for
        ``num_predictors`` predictors and ``num_sets`` demo sets (``with_demos``: there are
        demo candidates at all). No LM call; :meth:`apropose_when_ready` runs them."""
        if self.set_history_randomly:
            self.use_instruct_history = self.rng.random() < 0.5
        if not with_demos:
            self.use_task_demos = False
            num_demos = N
        else:
            num_demos = max(num_sets, 1)
        draws: list[_Draw] = []
        for pred_i in range(num_predictors):
            for demo_set_i in range(num_demos)[: min(N, num_demos)]:
                tip = self._draw_tip()
                draws.append(self._draw(pred_i, demo_set_i, tip))
        return draws

    async def apropose_when_ready(
        self,
        program: Any,
        draws: list[_Draw],
        grounded: Awaitable[None],
        demo_sets: list[asyncio.Future[Any]] | None,
        trial_logs: dict[Any, Any],
        limiter: asyncio.Semaphore,
    ) -> dict[int, list[str]]:
        """DSPex only: the proposals ``draws`` (from :meth:`draw_proposals`), each started as
        soon as what its prompt shows is known: the grounding (``grounded``: the program's
        source, the dataset summary) and the demo sets its task demos are read from
        (``demo_sets``: the programs holding each set's demos, as they are built), so they run
        while the other sets are still bootstrapping. Each waits for a slot of ``limiter``.
        The prompts, hence the requests, are those of
        :meth:`apropose_instructions_for_program` once every set is built."""
        grounding = asyncio.ensure_future(grounded)
        num_predictors = len(program.predictors())

        async def one(draw: _Draw) -> str:
            await asyncio.shield(grounding)
            candidates = await self._sets_shown(draw, demo_sets, num_predictors)
            proposal = self._build(program, draw, candidates, trial_logs)
            async with limiter:
                return await proposal.arun()

        jobs = [asyncio.ensure_future(one(draw)) for draw in draws]
        try:
            texts = list(await asyncio.gather(*jobs))
        finally:
            for job in jobs:
                job.cancel()
            await asyncio.gather(*jobs, grounding, return_exceptions=True)
        return _by_predictor(draws, texts)

    async def _sets_shown(
        self, draw: _Draw, demo_sets: list[asyncio.Future[Any]] | None, num_predictors: int
    ) -> dict[int, list[list[Any]]] | None:
        """The demo candidates as the proposal's prompt reads them: the sets its task demos
        come from (in :meth:`GenerateModuleInstruction._task_demos`' order, until it has
        ``num_demos_in_context`` bootstrapped demos) awaited, the others left empty (never
        read)."""
        if demo_sets is None:
            return None
        shown: dict[int, list[list[Any]]] = {
            i: [[] for _ in demo_sets] for i in range(num_predictors)
        }
        if not self.use_task_demos or draw.demo_set_i == 0:
            return shown  # the prompt shows no task demos
        n = len(demo_sets)
        order = [*range(draw.demo_set_i, n), *range(draw.demo_set_i)]
        count = 0
        for j in order:
            built = await asyncio.shield(demo_sets[j])
            for i, predictor in enumerate(built.predictors()):
                shown[i][j] = predictor.demos
            for example in shown[draw.pred_i][j]:
                if "augmented" in example.keys():  # noqa: SIM118 (as _task_demos reads them)
                    count += 1
                    if count >= self.num_demos_in_context:
                        return shown
        return shown

    def _draw_tip(self) -> str | None:
        if not self.set_tip_randomly:
            return None
        key = self.rng.choice(list(TIPS.keys()))
        tip = TIPS[key]
        self.use_tip = bool(tip)
        if self.verbose:
            print(f"Selected tip: {key}")
        return tip

    def propose_instruction_for_predictor(
        self,
        program: Any,
        predictor: Any,
        pred_i: int,
        demo_candidates: Any,
        demo_set_i: int,
        trial_logs: dict[Any, Any],
        tip: str | None = None,
    ) -> str:
        """One new instruction for predictor ``pred_i``, from a fresh rollout of the prompt model."""
        return self._prepare(program, pred_i, demo_candidates, demo_set_i, trial_logs, tip).run()

    def _prepare(
        self,
        program: Any,
        pred_i: int,
        demo_candidates: Any,
        demo_set_i: int,
        trial_logs: dict[Any, Any],
        tip: str | None,
    ) -> _Proposal:
        """The generator for one proposal and its rollout LM (one ``rng`` draw); no LM call."""
        return self._build(
            program, self._draw(pred_i, demo_set_i, tip), demo_candidates, trial_logs
        )

    def _draw(self, pred_i: int, demo_set_i: int, tip: str | None) -> _Draw:
        """One proposal's last draw from ``rng`` (its rollout id), after its tip."""
        if self.prompt_model is None:
            raise ConfigurationError(
                "GroundedProposer needs a prompt_model or an LM set with dspex.configure(lm=...)"
            )
        return _Draw(pred_i, demo_set_i, tip, self.use_tip, self.rng.randint(0, 10**9))

    def _build(
        self, program: Any, draw: _Draw, demo_candidates: Any, trial_logs: dict[Any, Any]
    ) -> _Proposal:
        """The generator for one drawn proposal and its rollout LM; no draw, no LM call."""
        history = create_predictor_level_history_string(
            program, draw.pred_i, trial_logs, MAX_INSTRUCT_IN_HISTORY
        )
        generator = GenerateModuleInstruction(
            program_code_string=self.program_code_string,
            use_dataset_summary=self.use_dataset_summary,
            program_aware=self.program_aware,
            use_task_demos=bool(self.use_task_demos and demo_candidates),
            use_instruct_history=bool(self.use_instruct_history and history),
            use_tip=draw.use_tip,
            verbose=self.verbose,
        )
        rollout_lm = self.prompt_model.copy(
            rollout_id=draw.rollout_id, temperature=self.init_temperature
        )
        inputs = {
            "demo_candidates": demo_candidates,
            "pred_i": draw.pred_i,
            "demo_set_i": draw.demo_set_i,
            "program": program,
            "data_summary": self.data_summary,
            "previous_instructions": history,
            "num_demos_in_context": self.num_demos_in_context,
            "tip": draw.tip,
        }
        return _Proposal(generator, rollout_lm, inputs, self.verbose)


@dataclass(frozen=True)
class _Draw:
    """One proposal's draws from ``rng``: which predictor and demo set, its tip, its rollout."""

    pred_i: int
    demo_set_i: int
    tip: str | None
    use_tip: bool
    rollout_id: int


def _num_sets(demo_candidates: Any) -> int:
    return len(demo_candidates[0]) if demo_candidates else 0


def _by_predictor(draws: list[_Draw], texts: list[str]) -> dict[int, list[str]]:
    proposed: dict[int, list[str]] = {}
    for draw, text in zip(draws, texts, strict=True):
        proposed.setdefault(draw.pred_i, []).append(text)
    return proposed


class _Proposal:
    """One prepared proposal: run it (anywhere) to get the instruction."""

    def __init__(
        self,
        generator: GenerateModuleInstruction,
        rollout_lm: Any,
        inputs: dict[str, Any],
        verbose: bool,
    ) -> None:
        self.generator = generator
        self.rollout_lm = rollout_lm
        self.inputs = inputs
        self.verbose = verbose

    def run(self) -> str:
        return run_sync(self.arun())

    async def arun(self) -> str:
        with settings.context(lm=self.rollout_lm):
            proposed: str = (await self.generator.acall(**self.inputs)).proposed_instruction
        if self.verbose:
            print(f"PROPOSED INSTRUCTION: {proposed}")
        return strip_prefix(proposed)


async def _run_all(
    proposals: list[_Proposal], num_threads: int | None, limiter: asyncio.Semaphore | None
) -> list[str]:
    """The proposals' instructions, in order: one after the other with one thread (DSPy's
    order), else at most ``num_threads`` (or ``limiter``'s slots) at once."""
    if not num_threads or num_threads <= 1 or len(proposals) <= 1:
        return [await proposal.arun() for proposal in proposals]
    slots = limiter if limiter is not None else asyncio.Semaphore(num_threads)

    async def one(proposal: _Proposal) -> str:
        async with slots:
            return await proposal.arun()

    return list(await asyncio.gather(*(one(proposal) for proposal in proposals)))
