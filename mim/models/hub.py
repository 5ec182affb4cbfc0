"""Upload an exported folder to the Hugging Face hub (`mim export --push org/name`) with `huggingface_hub`, which
comes with timm. Credentials are checked before any work, so a push without them writes and sends nothing."""

from __future__ import annotations


def check_repo_id(repo_id: str) -> None:
    """`org/name`, as the hub names a model repository."""
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(parts) or any(c.isspace() for c in repo_id):
        raise ValueError(f"--push {repo_id!r}: a Hugging Face repository is named org/name (e.g. my-lab/mae-micro)")


def hub_token(repo_id: str) -> str:
    """The Hugging Face token (HF_TOKEN, or the one a `hf auth login` saved); a ValueError when there is none, so
    nothing is written or sent."""
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        raise ValueError(f"--push {repo_id}: no Hugging Face credentials (set HF_TOKEN or run `hf auth login`); "
                         "nothing was exported or uploaded")
    return token


def push_folder(out_dir: str, repo_id: str, token: str, private: bool = False) -> str:
    """Create the model repository `repo_id` (kept when it exists) and upload `out_dir` to it; its URL. A refusal or
    an unreachable hub is one `UnreachableError` line."""
    import errno

    import httpx
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    from mim.io import UnreachableError

    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(repo_id=repo_id, folder_path=out_dir, repo_type="model",
                          commit_message="Upload encoder exported by mim (timm format)")
    except HfHubHTTPError as err:
        raise UnreachableError(errno.EIO, f"--push {repo_id}: the hub refused: {str(err).splitlines()[0]}",
                               repo_id) from None
    except (httpx.HTTPError, OSError) as err:
        raise UnreachableError(errno.EHOSTUNREACH, f"--push {repo_id}: could not reach the Hugging Face hub "
                               f"({err}); {out_dir} is written, upload it later with --push", repo_id) from None
    return str(url)
