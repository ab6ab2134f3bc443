"""`workload-tagger certs generate`: a CA and a serving certificate on disk (dev and files mode)."""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509

from webhook.certs.generate import CA_VALIDITY, CURVES, LEAF_VALIDITY, generate_files, san_names
from webhook.config import Config
from webhook.errors import UserError


def _valid_san(value: str) -> str:
    """argparse type: a DNS name or an IP address; rejects what an apiserver could never dial."""
    text = value.strip()
    try:
        ipaddress.ip_address(text)
        return text
    except ValueError:
        pass
    labels = text.rstrip(".").split(".")
    if not text or any(not lbl or len(lbl) > 63 for lbl in labels) or not all(
        c.isalnum() or c in "-*" for lbl in labels for c in lbl
    ):
        raise argparse.ArgumentTypeError(f"not a DNS name or IP address: {value!r}")
    return text


def _positive_days(value: str) -> int:
    try:
        days = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of days: {value!r}") from None
    if days < 1:
        raise argparse.ArgumentTypeError("days must be at least 1")
    return days


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `workload-tagger certs generate`."""
    parser.add_argument(
        "--service", default="workload-tagger", help="Service name (SANs S, S.NS, S.NS.svc, ...)"
    )
    parser.add_argument("--namespace", default="workload-tagger", help="namespace of the Service")
    parser.add_argument("--out", default="certs", help="directory for ca.crt, ca.key, tls.crt, tls.key")
    parser.add_argument(
        "--san", action="append", default=[], type=_valid_san, metavar="NAME",
        help="extra DNS name or IP address (repeatable)",
    )
    parser.add_argument(
        "--days", type=_positive_days, default=LEAF_VALIDITY.days, help="serving certificate validity in days"
    )
    parser.add_argument(
        "--ca-days", type=_positive_days, default=CA_VALIDITY.days, help="CA validity in days"
    )
    parser.add_argument("--key-type", choices=sorted(CURVES), default="ecdsa-p256", help="key algorithm")


def run(args: argparse.Namespace, config: Config) -> int:
    """Write a fresh CA and serving certificate; print where and until when."""
    if args.days > args.ca_days:
        raise UserError(
            f"--days ({args.days}) cannot exceed --ca-days ({args.ca_days}): the CA must outlive the leaf"
        )
    try:
        paths = generate_files(
            Path(args.out), args.service, args.namespace, args.san,
            leaf_validity=dt.timedelta(days=args.days), ca_validity=dt.timedelta(days=args.ca_days),
            curve=CURVES[args.key_type],
        )
    except OSError as exc:
        raise UserError(f"cannot write certificates to {args.out}: {exc.strerror or exc}") from None
    leaf = x509.load_pem_x509_certificate(paths["tls.crt"].read_bytes())
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    until = f"{leaf.not_valid_after_utc:%Y-%m-%d}"
    print(f"serving certificate for {', '.join(san_names(leaf))} valid until {until}")
    return 0
