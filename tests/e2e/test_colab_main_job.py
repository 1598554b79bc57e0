"""`!QUICK=1 ./run_all.sh` in Colab, in the clone a notebook's setup cell made, with Colab's jupytext
(another version than the notebooks were written with): the main job runs every notebook and leaves
the clone as it found it. In a rehearsed Colab of its own, apart from the journey (test_colab_rehearsal.py)."""
import rehearsed_colab
from conftest import assert_the_main_job_made_everything
from rehearsed_colab import Runtime, clean

colab = rehearsed_colab.colab   # the fixture: a rehearsed Colab, for this module's tests


def test_the_main_job_in_colab_runs_everything_and_leaves_the_clone_clean(colab):
    rt = Runtime(colab, "main_job")
    try:
        rt.run("data", {})                         # the setup cell clones and installs, as on a first visit
        clone = rt.content / "landmarklib"
        main_job = rt.shell(f"cd {clone} && QUICK=1 OUT_DIR={rt.dir / 'main_job'} ./run_all.sh")
        assert "== all notebooks ran" in main_job and clean(clone)
        assert_the_main_job_made_everything(rt.dir / "main_job" / "quick")
    finally:
        rt.close()
