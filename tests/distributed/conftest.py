# worker.py is a script run by launch.py in its own processes (it reads argv and joins a jax.distributed
# run at import); pytest's --doctest-modules must not import it.
collect_ignore = ["worker.py"]
