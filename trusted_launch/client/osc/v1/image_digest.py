"""Where the image digest H of a launch token comes from, for the ``openstack trusted`` commands.

* ``--image-digest ALG:HEX``: given by the tenant.
* ``--image-file FILE``: computed here from the local file the tenant uploaded.
* ``--image IMAGE``: Glance's stored ``os_hash_algo``/``os_hash_value``. This
  trusts Glance (and whoever can write image records) to report the hash of
  the bytes it serves; add ``--download-image`` to stream the bytes from Glance
  and digest them here instead (and compare with the stored value).
"""

from __future__ import annotations

import argparse
import hashlib
from dataclasses import dataclass

from osc_lib import exceptions

from trusted_launch.crypto.digest import DEFAULT_ALGORITHM, DIGEST_SIZES, ImageDigest, digest_file
from trusted_launch.crypto.errors import CryptoError

DOWNLOAD_CHUNK = 4 * 1024 * 1024
SOURCE_GIVEN = "given"
SOURCE_FILE = "local file"
SOURCE_GLANCE = "glance os_hash_value (trusted, not recomputed)"
SOURCE_DOWNLOAD = "computed from the image bytes downloaded from glance"


@dataclass(frozen=True)
class ResolvedDigest:
    """An image digest and a phrase saying where it came from."""

    digest: ImageDigest
    source: str


def add_digest_arguments(parser: argparse.ArgumentParser, *, with_image: bool) -> None:
    """``--image-file``/``--image-digest`` (and ``--image`` when ``with_image``)."""
    group = parser.add_mutually_exclusive_group(required=with_image)
    if with_image:
        group.add_argument("--image", metavar="<image>",
                           help="Glance image (name or ID); its stored os_hash_value is used "
                                "unless --download-image is given")
    group.add_argument("--image-file", metavar="<file>",
                       help="local image file to digest (the bytes you uploaded)")
    group.add_argument("--image-digest", metavar="<alg:hex>",
                       help="image digest, sha256:HEX or sha512:HEX")
    parser.add_argument("--download-image", action="store_true",
                        help="with --image: stream the image from Glance and digest it here "
                             "instead of trusting Glance's stored hash")
    parser.add_argument("--digest-algorithm", choices=sorted(DIGEST_SIZES),
                        default=DEFAULT_ALGORITHM,
                        help="algorithm for --image-file and --download-image "
                             f"(default: {DEFAULT_ALGORITHM}, Glance's default)")


def digest_from_arguments(args: argparse.Namespace, image=None) -> ResolvedDigest:
    """Resolve H from the parsed arguments; ``image`` is the Glance image, if any."""
    try:
        if args.image_digest:
            return ResolvedDigest(ImageDigest.parse(args.image_digest), SOURCE_GIVEN)
        if args.image_file:
            return ResolvedDigest(digest_file(args.image_file, args.digest_algorithm),
                                  SOURCE_FILE)
    except (CryptoError, OSError) as exc:
        raise exceptions.CommandError(str(exc)) from None
    if image is None:
        raise exceptions.CommandError("give --image, --image-file or --image-digest")
    return glance_stored_digest(image)


def glance_stored_digest(image) -> ResolvedDigest:
    """H as Glance recorded it at upload (``os_hash_algo`` / ``os_hash_value``)."""
    algorithm, value = getattr(image, "hash_algo", None), getattr(image, "hash_value", None)
    if not algorithm or not value:
        raise exceptions.CommandError(
            f"image {image.id} has no os_hash_value (not uploaded yet?); "
            "use --image-file or --download-image")
    if algorithm not in DIGEST_SIZES:
        raise exceptions.CommandError(
            f"image {image.id} is hashed with {algorithm}, not one of "
            f"{', '.join(sorted(DIGEST_SIZES))}; use --download-image")
    try:
        return ResolvedDigest(ImageDigest(algorithm, bytes.fromhex(value)), SOURCE_GLANCE)
    except (CryptoError, ValueError):
        raise exceptions.CommandError(
            f"image {image.id} has a malformed os_hash_value") from None


def downloaded_digest(image_client, image, algorithm: str) -> ResolvedDigest:
    """Stream the image bytes from Glance and digest them; check Glance's stored value."""
    hasher = hashlib.new(algorithm)
    response = image_client.download_image(image, stream=True)
    try:
        for chunk in response.iter_content(DOWNLOAD_CHUNK):
            hasher.update(chunk)
    finally:
        response.close()
    digest = ImageDigest(algorithm, hasher.digest())
    stored_algorithm = getattr(image, "hash_algo", None)
    stored_value = getattr(image, "hash_value", None)
    if stored_algorithm == algorithm and stored_value and stored_value.lower() != \
            digest.value.hex():
        raise exceptions.CommandError(
            f"image {image.id}: the downloaded bytes have {algorithm} "
            f"{digest.value.hex()[:16]}..., Glance records {stored_value[:16]}...")
    return ResolvedDigest(digest, SOURCE_DOWNLOAD)


def image_digest(app, args: argparse.Namespace) -> tuple[ResolvedDigest, object | None]:
    """H for these arguments and the Glance image (None unless ``--image`` was given)."""
    if args.download_image and not getattr(args, "image", None):
        raise exceptions.CommandError("--download-image needs --image")
    if not getattr(args, "image", None):
        return digest_from_arguments(args), None
    image_client = cloud_client(app, "image")
    image = image_client.find_image(args.image, ignore_missing=False)
    if args.image_file or args.image_digest:
        return digest_from_arguments(args, image), image
    if args.download_image:
        return downloaded_digest(image_client, image, args.digest_algorithm), image
    return glance_stored_digest(image), image


class _NeedsCloud:
    """Stands for a command that needs credentials when asking OSC to authenticate."""

    auth_required = True
    # osc-lib checks a "required scope" before it has fetched a token and then fails with
    # "no authentication information"; OSC's own commands do not ask for it either.
    required_scope = False
    cmd_name = "trusted (cloud lookup)"


def cloud_client(app, service: str):
    """``app.client_manager.<service>`` after OSC authenticated (for auth-less commands)."""
    try:
        app.prepare_to_run_command(_NeedsCloud())
    except Exception as exc:
        raise exceptions.CommandError(
            f"this needs the cloud's {service} service, so cloud credentials "
            f"(--os-cloud or OS_* variables): {exc}") from None
    return getattr(app.client_manager, service)
