"""PNG plots (matplotlib, Agg): ensemble (history, histogram, correlator, configuration), reweighting
(observables, ESS and average phase along a scan, correlators), learning (couplings vs epoch and
histograms of a trainer's output), irg (inverse-RG configurations per size, FSS, Binder curves and
flow).

Exports:
    save_figure(fig, path, dpi=110) -> path   tight layout, write the PNG, release the figure
"""


def save_figure(fig, path, dpi=110):
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
