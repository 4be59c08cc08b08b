"""Closure decisions per second: the path qip_flow's application takes, against another engine
a Python team might pick for the same job, and the plain-Python floor, in one run.

Each row judges the same N random closure fact sets (a fixed seed) against the seven criteria
of rules/closure.yaml and answers which criteria are met. Each row is named for exactly the
code it times:

- **closure_decision (application path, explanation when refused)** — the target's row:
  ``RulesJudge.closure_decision(plan, facts=...)`` on the judge ``services/assess.judge``
  builds (what the workflow's closure guard asks), for a plan pinned to the closure rules in
  force. One durable_rules run decides; when a criterion is unmet the decision is explained
  condition by condition with the fact values and in words. The benchmark checks, before
  timing, that every refused set really is explained and every met one is not.
- **guard verdict (full)** — ``RulesJudge.closure(plan, signer, facts=...)``: the same decision
  made into the guard's verdict, the refusal's reasons in words and the audit record
  (``as_dict``) of every criterion.
- **Decide.closure, verdict only (diagnostic)** — ``Decide.closure(facts)``: which criteria
  hold, no explanation: the engine's share.
- **plain Python (floor)** — the seven criteria written as ``if`` tests; no engine can beat it.
- **SpiffWorkflow DMN** — bench/dmn/closure.dmn, the same criteria as a DMN decision table
  (hit policy COLLECT: one row per criterion, two rows where the rules file says "any"),
  evaluated by ``DMNEngine.result`` directly, without a BPMN workflow around it (the fastest way
  SpiffWorkflow offers), answers only. It runs in its own virtualenv, bench/.venv-spiff, made on
  first use (``python -m venv`` + ``pip install SpiffWorkflow==SPIFF_VERSION``), never in
  qip_flow's, as a child process that reads the fact sets from a file and prints its timing.

Before anything is timed every row's answer on every fact set is compared with the floor's;
any disagreement stops the benchmark. The rows then take turns, one pass over all sets each,
``--repeat`` rounds; each row's time is its median pass, and its ratio to SpiffWorkflow is the
median of the per-round ratios (so a busy spell on a shared machine falls on all alike).
Target (issue 15): the application path at least 3× SpiffWorkflow's DMN rate.

    python bench/decisions.py [--n 20000] [--seed 5] [--repeat 5] [--no-spiff] [--profile]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

from common import measure, peak_rss_mb, run_child, table  # noqa: E402

SPIFF_VERSION = "3.2.0"
SPIFF_VENV = BENCH / ".venv-spiff"
DMN_FILE = BENCH / "dmn" / "closure.dmn"

#: The criteria of rules/closure.yaml, in the file's order (the names its rules give them).
CRITERIA = ("actions verified", "indicators on target", "sustained", "re-audits", "learning",
            "sign-off level", "sign-off group")
#: Criteria of rules/closure.yaml left out: closure.monitoring-kept-up judges only plans closing
#: from monitoring, whose facts these sets never carry.
OUT_OF_SCOPE = ("closure.monitoring-kept-up",)
#: The facts the criteria read: the DMN table's inputs (missing facts are passed as None).
FACTS = ("actions", "actions_verified", "all_indicators_on_target", "sustained_days",
         "required_sustain_days", "reaudit_intervals_in_run", "required_reaudits", "learning_required",
         "learning_summary", "learning_embedded_places", "signer_level_rank",
         "required_signoff_level_rank", "signer_in_required_group", "special_cause_concern")


# --- the fact sets ---------------------------------------------------------------------------


def fact_sets(n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` closure fact sets as the facts layer hands them over (a missing fact is absent).
    About a third start from a plan ready to close, half of those with one fact spoiled; the
    rest are drawn freely, so every criterion is met and unmet often, and facts go missing."""
    rng = random.Random(seed)

    def maybe(value: Any, missing: float = 0.08) -> Any:
        return None if rng.random() < missing else value

    out = []
    for i in range(n):
        if rng.random() < 0.35:
            actions = rng.randint(1, 6)
            facts: dict[str, Any] = {
                "actions": actions, "actions_verified": actions,
                "all_indicators_on_target": True, "required_sustain_days": 90,
                "sustained_days": rng.randint(90, 200), "required_reaudits": rng.randint(0, 2),
                "reaudit_intervals_in_run": 2, "learning_required": True, "learning_summary": True,
                "learning_embedded_places": rng.randint(1, 4), "signer_level_rank": 2,
                "required_signoff_level_rank": rng.choice([None, 1, 2]),
                "signer_in_required_group": True, "special_cause_concern": False}
            if rng.random() < 0.5:  # spoil one fact: missing, or the other truth value, or 0
                name = rng.choice(FACTS)
                value = facts[name]
                facts[name] = rng.choice([None, not value if isinstance(value, bool) else 0])
        else:
            actions = maybe(rng.randint(0, 6))
            verified = actions if actions is not None and rng.random() < 0.6 else rng.randint(0, 6)
            facts = {
                "actions": actions, "actions_verified": maybe(verified),
                "all_indicators_on_target": maybe(rng.random() < 0.7),
                "required_sustain_days": maybe(rng.choice([30, 60, 90, 180])),
                "sustained_days": maybe(rng.randint(0, 200)),
                "required_reaudits": maybe(rng.randint(0, 3)),
                "reaudit_intervals_in_run": maybe(rng.randint(0, 3)),
                "learning_required": maybe(rng.random() < 0.8),
                "learning_summary": maybe(rng.random() < 0.6),
                "learning_embedded_places": maybe(rng.randint(0, 3)),
                "signer_level_rank": maybe(rng.randint(0, 3), 0.25),
                "required_signoff_level_rank": maybe(rng.randint(0, 3), 0.4),
                "signer_in_required_group": maybe(rng.random() < 0.5, 0.2),
                "special_cause_concern": maybe(rng.random() < 0.2)}
        facts["plan_id"] = f"QIP-BENCH-{i:05d}"
        if rng.random() < 0.3:
            facts["required_signoff_group"] = "Quality committee"
        out.append({k: v for k, v in facts.items() if v is not None})
    return out


def mask(met: Iterable[str]) -> int:
    """The met criteria as a bit mask over CRITERIA (compact, for the child's JSON)."""
    names = set(met)
    return sum(1 << i for i, name in enumerate(CRITERIA) if name in names)


# --- the engines -----------------------------------------------------------------------------


def python_closure(f: dict[str, Any]) -> list[str]:
    """The seven criteria as plain Python: a comparison with a missing fact never holds."""
    g = f.get
    actions, verified, on_target = g("actions"), g("actions_verified"), g("all_indicators_on_target")
    sustained, sustain_needed = g("sustained_days"), g("required_sustain_days")
    reaudits, reaudits_needed = g("reaudit_intervals_in_run"), g("required_reaudits")
    places, signer, level_needed = g("learning_embedded_places"), g("signer_level_rank"), \
        g("required_signoff_level_rank")
    met = []
    if actions is not None and actions > 0 and verified is not None and verified == actions:
        met.append("actions verified")
    if on_target is True:
        met.append("indicators on target")
        if sustained is not None and sustain_needed is not None and sustained >= sustain_needed \
                and g("special_cause_concern") is False:
            met.append("sustained")
    if reaudits is not None and reaudits_needed is not None and reaudits >= reaudits_needed:
        met.append("re-audits")
    if g("learning_required") is False or (g("learning_summary") is True and places is not None
                                          and places >= 1):
        met.append("learning")
    if signer is not None and (level_needed is None or signer >= level_needed):
        met.append("sign-off level")
    if g("signer_in_required_group") is True:
        met.append("sign-off group")
    return met


Answer = Callable[[dict[str, Any]], list[str]]


class QipFlow:
    """qip_flow's rows, on the runtime, judge and plan the application builds."""

    def __init__(self) -> None:
        from qip_flow.decide.pinned import current_version
        from qip_flow.runtime import Runtime
        from qip_flow.services.assess import judge
        from qip_flow.store.db import Database
        from qip_flow.store.models import Person, Plan

        self.rt = Runtime(db=Database("sqlite:///:memory:"))
        self.decide = self.rt.decide
        names = [str(r.then.params["criterion"])
                 for r in self.decide.book.for_outcome("plan", "criterion")
                 if r.ruleset == "closure" and r.id not in OUT_OF_SCOPE]
        if tuple(names) != CRITERIA:
            raise RuntimeError(f"rules/closure.yaml names the criteria {names}; this benchmark, "
                               f"its plain-Python floor and bench/dmn/closure.dmn know "
                               f"{list(CRITERIA)}")
        self._reading = self.rt.db.read()
        self.judge = judge(self.rt, self._reading.__enter__())
        # a plan approved under the closure rules in force, and someone signing its closure
        self.plan = Plan(id="QIP-BENCH", title="bench", service_id="bench", source_type="audit",
                         theme="bench", owner_id="owner", sponsor_id="owner",
                         state="closure_review",
                         closure_rules_version=current_version(self.decide.book))
        self.signer = Person(id="signer", name="Signer", level="senior")

    def close(self) -> None:
        self._reading.__exit__(None, None, None)

    def closure_decision(self, f: dict[str, Any]) -> Any:
        return self.judge.closure_decision(self.plan, facts=f)

    def guard_verdict(self, f: dict[str, Any]) -> Any:
        return self.judge.closure(self.plan, self.signer, facts=f)

    def rows(self) -> list[tuple[str, Answer]]:
        """(row, the criteria it finds met) for each of qip_flow's rows."""
        def decided(f: dict[str, Any]) -> list[str]:
            return met_names(self.closure_decision(f).criteria)

        def verdict(f: dict[str, Any]) -> list[str]:
            return [str(c["criterion"]) for c in self.guard_verdict(f).record["criteria"]
                    if c["met"] and c["criterion"] in CRITERIA]

        def verdict_only(f: dict[str, Any]) -> list[str]:
            return met_names(self.decide.closure(f).criteria)

        return [(APPLICATION, decided), (VERDICT, verdict), (DIAGNOSTIC, verdict_only)]

    def check_explained(self, sets: list[dict[str, Any]]) -> int:
        """The application row really explains when refused, and only then: every refused
        decision carries every criterion's conditions (with words) and a reason for each unmet
        one, as does the guard's verdict; a met decision carries none. The refusals counted."""
        refused = 0
        for f in sets:
            decision = self.closure_decision(f)
            verdict = self.guard_verdict(f)
            explained = [bool(c.conditions) and all(x.words for x in c.conditions)
                         for c in decision.criteria]
            if decision.met:
                if any(explained) or verdict.reasons:
                    raise RuntimeError(f"a met decision was explained: {f}")
                continue
            refused += 1
            if not all(explained) or not all(c.why_not for c in decision.unmet):
                raise RuntimeError(f"a refused decision was not explained: {f}")
            if verdict.holds or len(verdict.reasons) != len(decision.unmet):
                raise RuntimeError(f"the guard's verdict does not give each reason: {f}")
        if self.decide.engine.fallbacks:
            raise RuntimeError(f"{self.decide.engine.fallbacks} explanations needed the "
                               "engine's own reading: the Python reading disagreed with it")
        return refused


APPLICATION = "closure_decision (application path, explanation when refused)"
VERDICT = "guard verdict (full): reasons in words + audit record"
DIAGNOSTIC = "Decide.closure, verdict only, no explanation (diagnostic)"
FLOOR = "plain Python, same seven criteria (floor)"


def met_names(criteria: Iterable[Any]) -> list[str]:
    return [c.name for c in criteria if c.met and c.name in CRITERIA]


def one_pass(step: Callable[[dict[str, Any]], Any], sets: list[dict[str, Any]]) -> float:
    """Seconds to decide every set once."""
    return measure(lambda: [step(f) for f in sets]).seconds


def spiff_child(facts_file: Path, answers: bool) -> None:
    """Runs under bench/.venv-spiff's Python: judge every fact set with SpiffWorkflow's DMN
    engine, either to report the answers or once timed; print one JSON line."""
    from importlib.metadata import version
    from types import SimpleNamespace

    from SpiffWorkflow.bpmn.parser.BpmnParser import BpmnValidator
    from SpiffWorkflow.bpmn.script_engine import PythonScriptEngine
    from SpiffWorkflow.dmn.parser.BpmnDmnParser import BpmnDmnParser

    sets = json.loads(facts_file.read_text(encoding="utf-8"))
    parser = BpmnDmnParser(validator=BpmnValidator())  # also checks the file against DMN 1.3
    parser.add_dmn_file(str(DMN_FILE))
    engine = parser.get_engine("closure", None)
    workflow = SimpleNamespace(script_engine=PythonScriptEngine())  # all DMNEngine reads

    def decide(f: dict[str, Any]) -> list[str]:
        task = SimpleNamespace(data={name: f.get(name) for name in FACTS}, workflow=workflow)
        return list(dict.fromkeys(engine.result(task).get("criterion", [])))

    decide(sets[0])  # warm, as the in-process engines are by their answer pass
    out: dict[str, Any] = {"engine": f"SpiffWorkflow {version('SpiffWorkflow')} DMN"}
    if answers:
        out["met"] = [mask(decide(f)) for f in sets]
    else:
        out["seconds"] = one_pass(decide, sets)
    print(json.dumps(out))


def spiff_python() -> Path:
    """bench/.venv-spiff's Python with SpiffWorkflow SPIFF_VERSION, made on first use."""
    python = SPIFF_VENV / "bin" / "python"
    check = [str(python), "-c", "import importlib.metadata as m, SpiffWorkflow.dmn.engine.DMNEngine;"
             f"assert m.version('SpiffWorkflow') == {SPIFF_VERSION!r}"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    print(f"making {SPIFF_VENV} with SpiffWorkflow {SPIFF_VERSION} (once)", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(SPIFF_VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    f"SpiffWorkflow=={SPIFF_VERSION}"], check=True)
    subprocess.run(check, check=True)
    return python


class Spiff:
    """SpiffWorkflow in its own virtualenv, on the fact sets written once to a file."""

    def __init__(self, sets: list[dict[str, Any]], folder: Path) -> None:
        self.python = spiff_python()
        self.facts = folder / "facts.json"
        self.facts.write_text(json.dumps(sets), encoding="utf-8")

    def run(self, *options: str) -> dict[str, Any]:
        # common.run_child runs sys.executable; exec the other virtualenv's Python from there
        return run_child(["-c", "import os, sys; os.execv(sys.argv[1], sys.argv[1:])",
                          str(self.python), str(Path(__file__).resolve()), "--spiff-child",
                          str(self.facts), *options])


# --- the benchmark ---------------------------------------------------------------------------


def profile(step: Callable[[dict[str, Any]], Any], sets: list[dict[str, Any]]) -> None:
    """Where the application path's time goes (cProfile, printed, not saved)."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    for f in sets:
        step(f)
    profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(20)


def load() -> str:
    """The machine's load averages (1, 5, 15 minutes): it is shared."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def median(values: list[float]) -> float:
    return statistics.median(values)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20000, help="fact sets to decide (default 20000)")
    parser.add_argument("--seed", type=int, default=5, help="random seed of the fact sets")
    parser.add_argument("--repeat", type=int, default=5,
                        help="rounds, each row one pass per round; medians count (default 5)")
    parser.add_argument("--no-spiff", action="store_true",
                        help="skip SpiffWorkflow (its virtualenv needs the network once)")
    parser.add_argument("--profile", action="store_true",
                        help="also profile the application path with cProfile")
    parser.add_argument("--spiff-child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--answers", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.spiff_child:
        spiff_child(args.spiff_child, args.answers)
        return {}

    load_before = load()
    sets = fact_sets(args.n, args.seed)
    qip = QipFlow()
    engines: list[tuple[str, Answer]] = [*qip.rows(), (FLOOR, python_closure)]
    with tempfile.TemporaryDirectory() as folder:
        spiff = None if args.no_spiff else Spiff(sets, Path(folder))
        spiff_name = ""
        # every row's answer on every set, compared before anything is timed
        answers = {name: [mask(step(f)) for f in sets] for name, step in engines}
        if spiff is not None:
            told = spiff.run("--answers")
            spiff_name = told["engine"] + " (DMNEngine.result)"
            answers[spiff_name] = told["met"]
        reference = answers[FLOOR]
        for name, got in answers.items():
            wrong = [i for i, (a, b) in enumerate(zip(got, reference, strict=True)) if a != b]
            if wrong:
                i = wrong[0]
                raise RuntimeError(f"{name} disagrees with plain Python on {len(wrong)} of "
                                   f"{len(sets)} fact sets; first: {sets[i]} → "
                                   f"{answers[name][i]:07b} vs {reference[i]:07b} (bits in the "
                                   f"order {CRITERIA})")
        refused = qip.check_explained(sets)
        # rounds: every row one pass in turn, so a busy spell falls on all alike
        passes: dict[str, list[float]] = {name: [] for name in answers}
        for _ in range(args.repeat):
            for name, step in engines:
                passes[name].append(one_pass(step, sets))
            if spiff is not None:
                passes[spiff_name].append(spiff.run()["seconds"])
    qip.close()
    load_after = load()
    seconds = {name: median(times) for name, times in passes.items()}
    ratios: dict[str, list[float]] = {}
    if spiff is not None:
        ratios = {name: [d / t for d, t in zip(passes[spiff_name], times, strict=True)]
                  for name, times in passes.items()}
    rows = [[name, round(len(sets) / s), s / len(sets) * 1e6,
             median(ratios[name]) if ratios else "not measured"]
            for name, s in seconds.items()]
    all_met = sum(1 for m in reference if m == (1 << len(CRITERIA)) - 1)
    per = [sum(1 for m in reference if m >> i & 1) / len(sets) for i in range(len(CRITERIA))]
    notes = [f"{len(sets):,} random closure fact sets (seed {args.seed}); every row agreed with "
             f"the floor on every one before timing. {refused:,} of them are refused, and each "
             "refusal was checked to be explained (every criterion's conditions in words, a "
             "reason for each unmet one); no met decision was. "
             f"{all_met / len(sets):.0%} meet every criterion; each criterion is met in "
             + ", ".join(f"{p:.0%}" for p in per) + f" of them ({', '.join(CRITERIA)}).",
             f"{args.repeat} rounds, the rows taking turns one pass each; µs per decision is the "
             "median pass, × SpiffWorkflow the median of the per-round ratios (SpiffWorkflow's "
             "time over the row's).",
             f"Load average (1, 5, 15 min) before: {load_before}; after: {load_after} (a shared "
             f"2-core machine). Peak RSS of this process: {peak_rss_mb():.0f} MB."]
    met: bool | None = None
    if ratios:
        factor = median(ratios[APPLICATION])
        low, high = min(ratios[APPLICATION]), max(ratios[APPLICATION])
        met = factor >= 3
        notes.append(f"Target (issue 15) — the application path at least 3× SpiffWorkflow's DMN "
                     f"rate: {'met' if met else 'MISSED'} ({factor:.2f}×; rounds "
                     f"{low:.2f}–{high:.2f}×).")
    else:
        notes.append("Target (issue 15) — the application path at least 3× SpiffWorkflow's DMN "
                     "rate: not measured (--no-spiff).")
    table("decisions", "Closure decisions per second",
          ["row (the code it times)", "decisions/s", "µs per decision", "× SpiffWorkflow DMN"],
          rows, notes)
    if args.profile:
        profile(qip.closure_decision, sets[: min(len(sets), 5000)])
    return {"n": len(sets), "agreed": True, "seconds": seconds, "target_met": met,
            "all_met": all_met, "refused": refused,
            "ratios": {name: median(r) for name, r in ratios.items()}}


if __name__ == "__main__":
    main()
