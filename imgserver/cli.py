"""Command line of the image server: `imgserver [serve flags]` and `imgserver gencert`."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from imgserver import accesslog, tls
from imgserver.config import DEFAULT_PORT, ServerConfig, parse_address
from imgserver.workers import serve, worker_count
from lxdocker.errors import LxdockerError

log = logging.getLogger("imgserver")


def serve_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="imgserver",
        description="Serve lxdocker's LXD images over simplestreams (HTTPS, TLS 1.3). "
        "`imgserver gencert --help` makes a self-signed certificate.",
    )
    p.add_argument(
        "--address",
        default=f":{DEFAULT_PORT}",
        help="IP:PORT, :PORT or [IPv6]:PORT to listen on (default :%(default)s)",
    )
    p.add_argument("--lxdimages", type=Path, required=True, help="the image directory")
    p.add_argument("--cert", type=Path, required=True, help="PEM certificate")
    p.add_argument("--key", type=Path, required=True, help="PEM private key")
    p.add_argument(
        "--remote-name", default="lxdocker", help="remote name used in the printed lxc commands"
    )
    p.add_argument(
        "--refresh-interval",
        type=float,
        default=2.0,
        help="seconds between checks of the image directory for changes",
    )
    p.add_argument(
        "--header-timeout",
        type=float,
        default=15.0,
        help="seconds a client may take to send request headers or stay idle",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes sharing the port, each with its own event loop "
        "(0: one per CPU; default %(default)s)",
    )
    return p


def _gencert_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="imgserver gencert", description="Write a self-signed server.crt and server.key."
    )
    p.add_argument("--out", type=Path, required=True, help="directory for server.crt/.key")
    p.add_argument(
        "--san",
        action="append",
        default=[],
        required=True,
        help="DNS name or IP address clients use (repeat; the first is preferred)",
    )
    p.add_argument("--days", type=int, default=3650, help="validity in days")
    return p


def main(argv: list[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else argv
    try:
        if args_list[:1] == ["gencert"]:
            logging.basicConfig(level=logging.INFO, format=accesslog.log_format(with_pid=False))
            g = _gencert_parser().parse_args(args_list[1:])
            cert, key = tls.generate(g.out, g.san, g.days)
            info = tls.read_cert(cert)
            log.info("wrote %s and %s; sha256 fingerprint %s", cert, key, info.fingerprint)
            return 0
        a = serve_parser().parse_args(args_list)
        if a.workers < 0:
            serve_parser().error(f"--workers {a.workers}: expected 0 (one per CPU) or more")
        workers = worker_count(a.workers)
        # With worker processes, every line says which process wrote it.
        accesslog.configure(with_pid=workers > 1)
        config = ServerConfig(
            lxdimages=a.lxdimages,
            cert=a.cert,
            key=a.key,
            address=parse_address(a.address),
            remote_name=a.remote_name,
            refresh_interval=a.refresh_interval,
            header_timeout=a.header_timeout,
        )
        return serve(config, workers)
    except LxdockerError as e:
        log.error("%s", e)
        return 1
    except OSError as e:  # bind failures and the like name the address
        log.error("%s", e)
        return 1
