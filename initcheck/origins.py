"""Where each tensor came from: pretrained, new (task head), resized (added rows) or adapter."""


def assign(scan, settings):
    """Label records before their statistics are computed."""


def finish(scan, settings):
    """After the scan: add records for tensors that exist only in the task model."""
