"""`adaptrec eval`, `score`, `predict` and `data inspect`: measure adapters, write and print predictions."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .. import api
from ..atomic import write_json
from ..errors import AdaptrecError
from ..userfiles import check_output_file
from .options import (
    HISTORY_FILE,
    AdapterTemplateOpt,
    BatchOpt,
    EvalTemplateOpt,
    MadeForBackboneOpt,
    MadeForQuantOpt,
    SeedOpt,
    TemplateOpt,
    echo_json,
    path_option,
)

data_app = typer.Typer(no_args_is_help=True, help="Inspect data SPECs.")


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_)
    app.command()(score)
    app.command()(predict)
    app.add_typer(data_app, name="data")


def eval_(
    adapters: Optional[List[str]] = typer.Argument(None, help="registered adapters NAME[:VERSION], or domains (their "
                                                   "champions); none: the untuned backbone"),
    data: str = typer.Option(..., "--data", help="data SPEC, e.g. tallrec:movie:test (see docs/data.md)"),
    limit: Optional[int] = typer.Option(200, "--limit", min=0,
                                        help="seeded, label-stratified subset size (ranking: held-out items, a "
                                        "list each; with "
                                        "--candidates-file: the file's first lists); 0: all cases"),
    seed: int = SeedOpt,
    score: str = typer.Option("pyes", "--score", help="pyes | tallrec (TALLRec's P(Yes)-P(No))"),
    template: Optional[str] = EvalTemplateOpt,
    batch_size: int = BatchOpt,
    backbone: Optional[str] = MadeForBackboneOpt,
    quantization: Optional[str] = MadeForQuantOpt,
    candidates: int = typer.Option(0, "--candidates", min=0,
                                   help="ranking protocol for implicit data: rank each held-out "
                                   "item among N sampled negatives (HR/NDCG/MRR); --limit then counts held-out items"),
    candidates_file: Optional[Path] = path_option(None, "--candidates-file", help="ranking protocol on given "
                                                   "candidate lists (candidates.jsonl or .parquet, docs/data.md)"),
    json_out: Optional[Path] = path_option(None, "--json-out", help="also write the report to this JSON file "
                                            "(rows with CIs, the data's fingerprint, the environment)"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON (as --json-out writes it) instead "
                                 "of its table"),
    encoder: Optional[List[str]] = typer.Option(None, "--encoder", help="a registered collaborative encoder "
                                                "(`adaptrec train-cf`) to add as a row; repeatable (default: every "
                                                "registered encoder that may score the SPEC)"),
    no_encoders: bool = typer.Option(False, "--no-encoders", help="no collaborative encoder rows"),
    full_catalogue: bool = typer.Option(False, "--full-catalogue", help="encoder rows also rank each held-out item "
                                        "among every item of their catalogue (full_hit@10, full_ndcg@10)"),
) -> None:
    """Evaluate adapters (and the untuned backbone) beside the like-ratio and popularity baselines and the
    registered collaborative encoders."""
    if json_out:
        check_output_file(json_out, f"--json-out {json_out}", inputs=(candidates_file, data))  # before the evaluation
    if encoder and no_encoders:
        raise AdaptrecError(f"--encoder {encoder[0]} and --no-encoders: name encoder rows, or none")
    report = api.evaluate(adapters or [], data=data, limit=limit, seed=seed, candidates=candidates,
                          candidates_file=candidates_file, score=score, template=template, batch_size=batch_size,
                          backbone=backbone, quantization=quantization, encoders=[] if no_encoders else encoder,
                          full_catalogue=full_catalogue)
    echo_json(report.to_dict()) if as_json else typer.echo(report.markdown())
    if json_out:
        check_output_file(json_out, f"--json-out {json_out}", inputs=report.sources)  # a data file the SPEC named
        write_json(json_out, report.to_dict())


def score(
    adapter: Optional[str] = typer.Argument(
        None, help="a registered adapter (NAME[:VERSION]) or a domain (its champion); none: the untuned backbone"),
    data: str = typer.Option(..., "--data", help="data SPEC"),
    out: Path = path_option(..., "--out", help="predictions to write: JSON lines (.jsonl, .ndjson, .json), or "
                             "Parquet (.parquet)"),
    limit: Optional[int] = typer.Option(None, "--limit", min=0,
                                        help="a seeded, label-stratified subset (default, or 0: all cases)"),
    seed: int = SeedOpt,
    template: Optional[str] = AdapterTemplateOpt,
    batch_size: int = BatchOpt,
    backbone: Optional[str] = MadeForBackboneOpt,
    quantization: Optional[str] = MadeForQuantOpt,
    shard: Optional[str] = typer.Option(None, "--shard", help="I/N: only the cases at positions I, I+N, I+2N, ... "
                                        "(the N shards together hold every case once)"),
    engine: str = typer.Option("local", "--engine", help="local (this process) | ray (a Ray Data actor pool; "
                               "$RAY_ADDRESS names a cluster)"),
    actors: Optional[int] = typer.Option(None, "--actors", min=1,
                                         help="--engine ray: actors, each with its own backbone "
                                         "(default: one per CPU)"),
    chunk_size: Optional[int] = typer.Option(None, "--chunk-size", min=1, help="cases scored, then written, at a time "
                                             "(default 256; --engine ray: less, to give each actor several chunks)"),
    no_cache: bool = typer.Option(False, "--no-cache", help="neither read nor write the score cache (e.g. Ray "
                                  "actors on a network file system, where SQLite's WAL mode does not work)"),
) -> None:
    """Write P(yes) (and TALLRec's score) for every case of a SPEC, streamed chunk by chunk to JSONL or Parquet."""
    result = api.write_predictions(adapter, data=data, out=out, limit=limit, seed=seed, template=template,
                                   batch_size=batch_size, backbone=backbone, quantization=quantization, shard=shard,
                                   engine=engine, actors=actors, chunk_size=chunk_size, cache=not no_cache)
    speed = f"{result.rows_per_s:.2f} rows/s"
    if result.prompts_per_s is not None:
        speed += f", {result.prompts_per_s:.2f} prompts/s uncached, {result.cached} from the score cache"
    typer.echo(f"wrote {result.n} predictions of {result.adapter or 'the untuned backbone'} to {result.path} ({speed})")


def predict(
    adapter: str = typer.Argument(..., help="a registered adapter NAME[:VERSION], or a domain (its promoted one)"),
    history: Path = path_option(..., "--history", help=HISTORY_FILE),
    item: str = typer.Option(..., "--item", help="the target item's title"),
    item_id: Optional[str] = typer.Option(None, "--item-id", help="the target's catalogue id (a collaborative "
                                          "adapter embeds it; history items take theirs as \"item_id\")"),
    template: Optional[str] = AdapterTemplateOpt,
    backbone: Optional[str] = MadeForBackboneOpt,
    quantization: Optional[str] = MadeForQuantOpt,
) -> None:
    """Print P(yes) that the user with this history likes ITEM."""
    p = api.predict(adapter, history, item, item_id=item_id, template=template, backbone=backbone,
                    quantization=quantization)
    typer.echo(f"{p:.4f}")


@data_app.command("inspect")
def data_inspect(
    spec: str = typer.Argument(..., help="data SPEC, e.g. tallrec:movie:test"),
    template: str = TemplateOpt,
    n_show: int = typer.Option(1, "--show", min=0, help="how many rendered prompts to print"),
    backbone: Optional[str] = typer.Option(None, "--backbone", help="tokenizer for token-length stats (default: embedded)"),
    user_token: bool = typer.Option(False, "--user-token", help="-items templates: render a collab adapter's <user> token"),
    match_token: bool = typer.Option(False, "--match-token", help="-items templates: render a collab adapter's <match> token"),
) -> None:
    """Show a rendered prompt, token-length stats and the label balance of a SPEC."""
    typer.echo(api.inspect_data(spec, template=template, show=n_show, backbone=backbone, user_token=user_token,
                                match_token=match_token))
