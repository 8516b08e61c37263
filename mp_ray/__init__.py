"""mp-ray: predict the model a learning algorithm would produce from any subset of its data.

Importing the package never starts Ray; the CLI and the jobs connect through
:func:`mp_ray.ray_session.connect`.
"""

__version__ = "0.1.0"
