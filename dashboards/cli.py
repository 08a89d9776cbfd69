"""``fer dashboard build|serve|compare|index``: review a sweep as one self-contained HTML page.

fer dashboard build runs/sweeps/reg1 --out reg1.html      # one file, opens offline
fer dashboard serve runs/sweeps/reg1 [--host 127.0.0.1] [--port 8050]   # live while the sweep runs
fer dashboard compare runs/sweeps/reg1 runs/sweeps/reg2 --out compare.html
fer dashboard index runs/sweeps [--out runs/sweeps/index.html] [--build-pages]   # every experiment
fer dashboard serve runs/sweeps          # a folder of experiments: the index and every live page
"""

from __future__ import annotations

import time

from fer_core.errors import FerError
from fer_core.progress import say

from .serve import DEFAULT_HOST, DEFAULT_PORT


def add_parsers(sub) -> None:
    dash = sub.add_parser(
        "dashboard",
        help="review a sweep: one self-contained HTML page, served live, or compared",
        description="Review a sweep's experiment folder (<storage>/<name>/ of "
        "sweeps/regularization.py) as one HTML page that opens offline.",
    )
    dsub = dash.add_subparsers(dest="dashboard_command", metavar="ACTION", required=True)

    p = dsub.add_parser(
        "build",
        help="write the review page of one experiment",
        description="Write one self-contained HTML file: header facts, sortable leaderboard, "
        "learning curves, collapsed trials, parallel coordinates, axis plots with "
        "edge-of-range warnings, fANOVA importance, the best trial's confusion matrix.",
    )
    p.add_argument("experiment", help="experiment folder (<storage>/<name>)")
    p.add_argument("--out", help="HTML file to write (default: <experiment>/dashboard.html)")
    p.set_defaults(func=_run_build)

    p = dsub.add_parser(
        "serve",
        help="serve the review page live while a sweep runs (read-only)",
        description="Serve the page of one experiment, rebuilt when its files change; the page "
        "reloads itself. Only GET / and /version; binds 127.0.0.1 unless --host. Given a "
        "folder of experiments (not itself one), serve their index at /, each "
        "experiment's live page at /e/<name>/ and /compare?a=<name>&b=<name>.",
    )
    p.add_argument(
        "experiment",
        help="experiment folder (<storage>/<name>; may still be running), or a folder (or storage URI) of experiments",
    )
    p.add_argument(
        "--index",
        action="store_true",
        default=None,
        help="serve the folder as a root of experiments even when none is there yet (otherwise decided "
        "from what it holds)",
    )
    p.add_argument("--host", default=DEFAULT_HOST, help="address to bind (0.0.0.0 exposes the page to the network)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (Ray's dashboard uses 8265)")
    p.add_argument("--refresh", type=int, default=10, help="seconds between the page's checks for new results")
    p.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="also answer requests for this host name (e.g. behind a proxy); IP addresses, localhost and "
        "the bound name always work, other names are refused (DNS rebinding); '*' allows any",
    )
    p.set_defaults(func=_run_serve)

    p = dsub.add_parser(
        "compare",
        help="two experiments side by side on one page",
        description="Two experiments on one page (e.g. before and after a data fix): header facts, "
        "outcome counts, best score/peak/final, score distributions, both leaderboards.",
    )
    p.add_argument("experiment_a", help="first experiment folder (A)")
    p.add_argument("experiment_b", help="second experiment folder (B)")
    p.add_argument("--out", default="compare.html", help="HTML file to write")
    p.set_defaults(func=_run_compare)

    p = dsub.add_parser(
        "index",
        help="one page listing every experiment under a folder",
        description="Write one self-contained HTML page listing every experiment under ROOT (a "
        "folder or storage URI whose subfolders are experiments): state (running, "
        "finished, interrupted), times, data set, space, outcomes, best and confirmed "
        "scores, compute, user and command; sortable, filterable by data set, linking to "
        "each experiment's page; pick two rows for the command that compares them.",
    )
    p.add_argument("root", help="folder or storage URI holding the experiments (e.g. runs/sweeps, s3://bucket/sweeps)")
    p.add_argument("--out", help="HTML file to write (default: <root>/index.html)")
    p.add_argument(
        "--build-pages",
        action="store_true",
        help="also (re)build each experiment's page (<experiment>/dashboard.html) when it is missing or "
        "older than the experiment's files, so every row links to a current page",
    )
    p.add_argument(
        "--running-minutes",
        type=float,
        default=None,
        metavar="MIN",
        help="an unfinished experiment is running when a file in it was written this recently (default: "
        "10), otherwise interrupted",
    )
    p.set_defaults(func=_run_index)


def _output(out):
    """``--out`` (a file or URI): a new file, or a page this command wrote earlier (nothing else is replaced)."""
    from fer_core.safepaths import check_file_replaceable, is_uri
    from fer_core.storage import Location, locate

    from .html import GENERATOR, is_our_page

    if isinstance(out, Location) or is_uri(out):
        loc = out if isinstance(out, Location) else locate(out)
        if loc.info().type.name == "Directory":
            raise FerError(f"--out {loc}: is a folder; give the HTML file to write")
        if loc.is_file() and GENERATOR.encode() not in loc.read_bytes()[:4096]:
            raise FerError(
                f"--out {loc}: exists and is not a dashboard page written by fer, so it is not replaced; "
                "choose another --out"
            )
        return loc
    return locate(check_file_replaceable(out, is_ours=is_our_page, what="a dashboard page"))


def _run_build(args) -> int:
    from sweeps.experiment import load_experiment

    from .report import build_report

    t0 = time.time()
    exp = load_experiment(args.experiment)
    out = _output(args.out or exp.store.file("dashboard.html"))
    out.write_text(build_report(exp))
    say(f"{exp.name}: {len(exp.trials)} trials{' (live)' if exp.live else ''}; page built in {time.time() - t0:.1f}s")
    print(out)
    return 0


def _run_compare(args) -> int:
    from sweeps.experiment import load_experiment

    from .compare import build_compare

    a, b = load_experiment(args.experiment_a), load_experiment(args.experiment_b)
    out = _output(args.out)
    out.write_text(build_compare(a, b))
    print(out)
    return 0


def _run_index(args) -> int:
    from .index import RUNNING_WINDOW_S, build_index, experiment_names, link_base_for, open_root, read_rows

    t0 = time.time()
    root = open_root(args.root)
    window = RUNNING_WINDOW_S if args.running_minutes is None else max(0.0, args.running_minutes * 60)
    out = _output(args.out or root.child("index.html"))
    names, other = experiment_names(root)
    rows = read_rows(root, names, window_s=window)
    read_s = time.time() - t0
    if args.build_pages:
        _build_pages(rows)
    out.write_text(
        build_index(root, rows, link_base=link_base_for(root, out), skipped=other, elapsed_s=read_s, window_s=window)
    )
    bad = sum(r.state == "unreadable" for r in rows)
    say(f"{len(rows)} experiments ({bad} unreadable) read in {read_s:.1f}s; index written in {time.time() - t0:.1f}s")
    print(out)
    return 0


def _build_pages(rows) -> None:
    """Each readable experiment's page, ``<experiment>/dashboard.html``, where missing or stale."""
    from sweeps.experiment import load_experiment

    from .index import PAGE_NAME, UNREADABLE
    from .report import build_report

    for row in rows:
        if row.state == UNREADABLE or row.page == "current":
            continue
        t0 = time.time()
        try:
            exp = load_experiment(row.where)
            out = _output(exp.store.file(PAGE_NAME))
            out.write_text(build_report(exp))
        except FerError as exc:
            say(f"{row.folder}: page not built: {exc}")
            continue
        row.page = "current"
        say(f"{row.folder}: page built in {time.time() - t0:.1f}s")


def _run_serve(args) -> int:
    from .serve import make_server

    server = make_server(
        args.experiment,
        host=args.host,
        port=args.port,
        refresh_s=max(1, args.refresh),
        allow_hosts=args.allow_host,
        index=args.index,
    )
    host, port = server.server_address[:2]
    assert isinstance(host, str)  # a TCP socket's address: (host, port[, flowinfo, scope_id])
    shown = f"[{host}]" if ":" in host else host
    from .serve import IndexServer

    if isinstance(getattr(server, "app", None), IndexServer):
        say(
            f"serving the experiments in {args.experiment} at http://{shown}:{port}/ (the index; each experiment at "
            f"/e/<name>/; read-only; Ctrl+C stops)"
        )
    else:
        say(f"serving {args.experiment} at http://{shown}:{port}/ (read-only; Ctrl+C stops)")
    if args.host.strip() in ("0.0.0.0", "::", ""):
        say(
            f"warning: --host {args.host} exposes this page to every machine that can reach this one, with no "
            "authentication: it shows the experiment's paths, commands and configs. Bind 127.0.0.1 (the default) "
            "and use an SSH tunnel unless that is what you want"
        )
    from experiment_store import ExperimentStore

    if not isinstance(getattr(server, "app", None), IndexServer) and not ExperimentStore(args.experiment).exists():
        say(f"{args.experiment} does not exist yet: the page waits for the sweep to create it")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        say("stopped")
    finally:
        server.server_close()
    return 0
