"""Config texts shared by test modules.

    learn_config(training, path, shape=(8, 8), thermalize=20, tied=True)
        the toy learning problem of the learn tests: a Gaussian target (kappa 0.4, mu2 0.5, lam 0),
        w and a learned from the independence sampler's chains; `training` holds the [training] keys.
        `path` may be a format placeholder such as "{path}" (the text is then a template).
    SAMPLE
        template of the fault tests' small `qftml sample` chain (8^2, symmetric phase):
        SAMPLE.format(sweeps=..., ckpt=..., path=...)
"""


def _value(v):
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, bool):
        return "true" if v else "false"
    return repr(v)


def learn_config(training: dict, path, shape=(8, 8), thermalize: int = 20, tied: bool = True) -> str:
    lines = ["[lattice]", f"shape = {_value(list(shape))}",
             "[sampler]", 'algorithm = "independence"', f"thermalize = {thermalize}", "seed = 3",
             "[target]", "kappa = 0.4", "mu2 = 0.5", "lam = 0.0",
             "[model]", "w_range = [0.3, 0.5]", "a_range = [1.5, 1.8]", "b_range = [0.0, 0.0]",
             'learn = ["w", "a"]'] + (['tied = ["w"]'] if tied else [])
    lines += ["[training]"] + [f"{k} = {_value(v)}" for k, v in training.items()]
    lines += ["[output]", f"path = {_value(str(path))}", "plots = false"]
    return "\n".join(lines) + "\n"


SAMPLE = """\
[lattice]
shape = [8, 8]
[action]
kappa = 0.3
mu2 = 0.1
lam = 0.5
[sampler]
sweeps = {sweeps}
thermalize = 10
every = 2
seed = 5
checkpoint_every = {ckpt}
[output]
path = "{path}"
"""
