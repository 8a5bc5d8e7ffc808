"""Folders too large to walk whole: the files past the pack's limit are not scanned."""

from . import rule


@rule("IC405", "folder-walk-limit", "warning", scope="model")
def folder_walk_limit(ctx):
    """The model or run folder holds more files than the rule pack's `max_files`; the rest were not scanned.

    ## What it does
    initcheck walks every file under the folder (subfolders included, symlinked folders not
    followed) to find the pickles hiding in it (IC401). The walk stops at the `[scan]` table's
    `max_files` (100,000 by default); the files past it are counted, not scanned, and this rule
    names the count and the limit. Under `--rules ci` (`walk_limit_is_error = true`) such a folder
    is an input error instead: exit 2, one line.

    Harmless look-alike: a folder of exactly `max_files` files is walked whole and not reported.

    ## Why is this bad?
    A hostile `optimizer.pt` placed after 100,000 padding files would otherwise be absent from the
    report: the verdict would hold for the files walked, not for the folder.

    ## Example
    `ckpt: 100,004 files, over the rule pack's max_files (100,000): 4 not scanned for pickles`.

    ## Use instead
    Check the model folder itself, not a parent holding datasets or caches, or raise `max_files`
    in your pack's `[scan]` table.
    """
    ckpt = ctx.scan.checkpoint
    walk = getattr(ckpt, "walk_limit", None) if ckpt is not None else None
    if not walk:
        return
    count, limit = walk["files"], walk["limit"]
    over = f"over {count:,}" if walk.get("at_least") else f"{count:,}"
    left = f"{count - limit:,}" if not walk.get("at_least") else f"over {count - limit:,}"
    yield ctx.finding(None, f"{walk['folder']}: {over} files, over the rule pack's max_files ({limit:,}): {left} not "
                            "scanned for pickles (IC401 saw only the first)", value=count, expected=f"<= {limit}")
