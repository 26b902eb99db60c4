"""Small collective patterns of the driver.

Exports:
    on_root(comm, fn, errors)   fn() on rank 0 only, its result broadcast; an exception of a type in
                                `errors` raised there is raised again, same type and message, on every
                                rank (so all ranks agree on a verdict without all touching the file)
"""


def on_root(comm, fn, errors):
    if comm is None or comm.size == 1:
        return fn()
    result = None
    if comm.rank == 0:
        try:
            result = ("ok", fn())
        except errors as e:
            result = ("error", (type(e), str(e)))
    status, payload = comm.bcast(result, root=0)
    if status == "error":
        kind, message = payload
        raise kind(message)
    return payload
