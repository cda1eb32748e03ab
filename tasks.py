# The project's own tasks: nixtasks deploying its example fleet to the lab.
from nixtasks.tasks import ns  # noqa: F401
