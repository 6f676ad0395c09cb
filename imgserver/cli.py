"""Command line of the image server: `imgserver [serve flags]` and `imgserver gencert`."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from imgserver import accesslog, authority, tls
from imgserver.config import DEFAULT_PORT, ServerConfig, parse_address
from imgserver.errors import CertificateError, ServerError
from imgserver.workers import serve, worker_count

log = logging.getLogger("imgserver")


def serve_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="imgserver",
        description="Serve lxdocker's LXD images over simplestreams (HTTPS, TLS 1.3). "
        "`imgserver gencert --help` makes a private CA and a server certificate.",
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
        "--ca",
        type=Path,
        help="the CA certificate hosts pin (default: ca.crt next to --cert if it exists; "
        "without one, hosts pin --cert itself)",
    )
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
        "--write-timeout",
        type=float,
        default=60.0,
        help="seconds a client may accept no data of a download before it is disconnected",
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
        prog="imgserver gencert",
        description="Write a private CA (ca.crt, ca.key: hosts pin ca.crt) and a server "
        "certificate issued by it (server.crt, server.key). With --renew: a new server key "
        "and certificate from the same CA, so hosts need no new pin; a self-signed "
        "server.crt from an older install becomes the CA (same file, same pins).",
    )
    p.add_argument("--out", type=Path, required=True, help="the certificate directory")
    p.add_argument(
        "--san",
        action="append",
        default=[],
        help="DNS name or IP address clients use (repeat; the first is preferred); "
        "required without --renew, which keeps the current ones by default",
    )
    p.add_argument(
        "--days",
        type=int,
        default=authority.SERVER_DAYS,
        help="validity of the server certificate in days (default %(default)s)",
    )
    p.add_argument(
        "--renew", action="store_true", help="re-issue the server certificate from the CA in --out"
    )
    return p


def _gencert(argv: list[str]) -> int:
    g = _gencert_parser().parse_args(argv)
    if g.days < 1:
        _gencert_parser().error(f"--days {g.days}: expected 1 or more")
    if g.renew:
        issued = authority.renew(g.out, g.san, g.days)
    else:
        issued = authority.create(g.out, g.san, g.days)
    ca, cert = tls.read_cert(issued.ca), tls.read_cert(issued.cert)
    log.info(
        "wrote %s and %s (SANs %s, valid until %s UTC)",
        issued.cert,
        issued.key,
        ", ".join(cert.sans),
        f"{cert.not_after:%Y-%m-%d}",
    )
    log.info("hosts pin %s, sha256 fingerprint %s", issued.ca, ca.fingerprint)
    if g.renew:
        log.info("restart imgserver to serve the new certificate; hosts need no change")
    return 0


def main(argv: list[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else argv
    try:
        if args_list[:1] == ["gencert"]:
            logging.basicConfig(level=logging.INFO, format=accesslog.log_format(with_pid=False))
            return _gencert(args_list[1:])
        a = serve_parser().parse_args(args_list)
        if a.workers < 0:
            serve_parser().error(f"--workers {a.workers}: expected 0 (one per CPU) or more")
        if not a.write_timeout > 0:
            serve_parser().error(f"--write-timeout {a.write_timeout}: expected seconds above 0")
        workers = worker_count(a.workers)
        # With worker processes, every line says which process wrote it.
        accesslog.configure(with_pid=workers > 1)
        config = ServerConfig(
            lxdimages=a.lxdimages,
            cert=a.cert,
            key=a.key,
            ca=a.ca,
            address=parse_address(a.address),
            remote_name=a.remote_name,
            refresh_interval=a.refresh_interval,
            header_timeout=a.header_timeout,
            write_timeout=a.write_timeout,
        )
        return serve(config, workers)
    except CertificateError as e:  # the files exist but cannot be served: refuse (issue 17)
        log.error("%s", e)
        return 2
    except ServerError as e:
        log.error("%s", e)
        return 1
    except OSError as e:  # bind failures and the like name the address
        log.error("%s", e)
        return 1
