"""The Python client's tests import ``squall_client`` from the repository (clients/python/src)."""
import tests.support.pyclient  # noqa: F401  (puts clients/python/src on sys.path first)
