"""Stand-in for google.colab.drive: mount() needs a person at the frontend to sign in."""
import os

from google.colab import _log


def mount(mountpoint, force_remount=False, timeout_ms=120000, use_metadata_server=None):
    _log(f"mount {mountpoint}")
    if not force_remount and os.path.isdir(os.path.join(mountpoint, "MyDrive")):
        print(f"Drive already mounted at {mountpoint}")
        return
    # The real sign-in is a request to the frontend, answered on the kernel's stdin channel. In a
    # kernel without a frontend (papermill sends allow_stdin false) ipykernel raises
    # StdinNotImplementedError here.
    input("Enter your authorization code:\n")
    os.symlink(os.environ["COLAB_REHEARSAL_DRIVE"], mountpoint)
    _log(f"mounted {mountpoint}")
    print(f"Mounted at {mountpoint}")
