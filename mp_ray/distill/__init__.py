"""The distilled datamodel (Ye, Yu, Liu, Wang: "Distilled Datamodel with Reverse Gradient
Matching", CVPR 2024), for mp-ray's learners.

What it predicts: the model trained without a group of training points, and from it the
attribution matrix A[k, j] = E(θ_{−k}; x_j) − E(θ*; x_j) of every group k on every test
example j, without retraining.

Offline (:func:`run_distill`):

1. **Groups** (:mod:`~mp_ray.distill.groups`): per-class k-means on the standardised
   training features, ``distill.groups_per_class`` clusters per class, seeded from the
   experiment's root seed. G groups, each point in exactly one.
2. **Supervision by retraining** (:mod:`~mp_ray.distill.supervision`): θ* = θ(D) and
   θ_{−k}, the learner retrained without group k, for every k — by the learner's own
   batched ``fit_batch``, the same code the retraining actors run, on the driver (G
   models). The paper matches gradients along the training trajectory instead; supervision
   by retrained models is mp-ray's choice, so the synsets are fitted to exactly the
   quantity they are judged on.
3. **Synsets** (:mod:`~mp_ray.distill.synset`, :mod:`~mp_ray.distill.matching`): for each
   group, m = ``distill.synthetic_per_group`` synthetic examples with free features, soft
   labels and weights, and one step size η > 0 for all groups, such that the reverse
   (ascent) step reproduces retraining: θ* + η ∇_θ L(synset_k; θ*) ≈ θ_{−k}, by Adam on the
   summed squared parameter error relative to Σ_k ‖θ_{−k} − θ*‖².

Online (:class:`DistilledDatamodel`): s_k = η ∇_θ L(synset_k; θ*) once per group; the model
without a union of groups R is θ* + Σ_{k∈R} s_k (the steps add up, as the removed groups'
losses do); ``predict(masks)`` for any subset is θ* + Σ_k f_k s_k with f_k the share of group
k left out; ``attribution`` fills A from the G models θ* + s_k.

Choices the paper leaves open, and what mp-ray takes:

- **one step** of size η from θ* (the paper's "a few steps"): a single step keeps every
  removal a linear combination of G precomputed vectors, so any number of removals costs
  one ``(R, G) @ (G, d)`` product;
- **η learned**, shared by all groups, started where the initial steps have the
  retrained changes' norm (``distill.learn_step``); **weights learned** per example
  (started at |group|/m), **soft labels** (softmax of free logits);
- **initialisation from real points** (``distill.init``): k-means centroids of the group,
  soft-labelled halfway between θ*'s prediction and the group's class (so the first step
  is the ordinary loss gradient at the centroids);
- **evaluation objective** E: the correct-class margin on the test split, the store's
  ``outputs`` (``distill.objective``; or the per-example loss).

Honesty of the validation: the synsets see only the G single-group removals. The table
of :func:`run_distill` also scores ``distill.holdout_removals`` unions of
``distill.holdout_union`` groups, retrained and never used in fitting, and up to
``distill.validation_rows`` test rows of the experiment's store (random subsets, scored
through ``predict``), beside the no-change baseline θ* and first-order influence
functions from θ*. The single-group rows are in-sample and marked so.

Saved with its groups, θ*, η and the retrained ground truth in the experiment store's
``distill`` group or at ``distill.uri`` (:mod:`~mp_ray.distill.storage`); loading checks the
dataset fingerprint.

Measured by ``benchmarks/distill.py`` (``OMP_NUM_THREADS=1 .venv/bin/python
benchmarks/distill.py``; results in ``benchmarks/results/distill.md``): whole training
splits, logistic regression (C = 1), 4 groups per class, defaults otherwise; "held out" =
never distilled on. pearson / spearman: leave-group-out correlation of predicted and
retrained test-margin changes (mean over the targets where both vary; – for no change,
which never varies); rel: ‖θ̂−θ‖/‖θ‖; chg: error relative to the size of the retrained
change (no change = 1).

::

    breast_cancer (n 399, d 31, G 8)             pearson  spearman    rel    chg
    28 held-out unions of 2 groups  no change       –        –       0.463  1
                                    infl. fns       0.922    0.929   0.331  0.746
                                    distilled       0.955    0.975   0.083  0.228
    50 held-out unions of 4 groups  infl. fns       0.828    0.855   0.643  0.818
                                    distilled       0.836    0.875   0.341  0.490
    141 store rows (Bernoulli ½)    infl. fns       0.910    0.907   0.217  0.516
                                    distilled       0.208    0.199   0.456  1.029

    digits (n 1257, d 650, G 40)
    50 held-out unions of 2 groups  no change       –        –       0.198  1
                                    infl. fns       0.923    0.854   0.166  0.849
                                    distilled       0.933    0.656   0.072  0.378
                                    ditto, m = 8    0.948    0.711   0.064  0.341
    50 held-out unions of 4 groups  infl. fns       0.912    0.858   0.255  0.855
                                    distilled       0.925    0.756   0.112  0.388
    141 store rows (Bernoulli ½)    infl. fns       0.820    0.817   0.286  0.631
                                    distilled       0.229    0.219   0.432  0.951

- On removals of whole groups the distilled datamodel is the closest to retraining in
  parameters (2–4× less error than influence functions) and at least as well correlated
  (Pearson); on digits its Spearman correlation is lower than influence functions'
  (0.66 vs 0.85): the supervised residual (0.33 of the change at m = 4, 0.30 at m = 8,
  optimisation-limited: the best rank-m matrices would leave 0.16 / 0.04) scatters the
  small changes; on breast_cancer the residual is 0.001 and Spearman is higher too.
- For random subsets ``predict`` is barely better than no change (a group-level model
  cannot see which points of a group a random half keeps); influence functions are far
  better there. Use it for group-structured removals.
- Choices: m = 1 / 2 / 4 / 8 give held-out Pearson 0.922 / 0.927 / 0.933 / 0.948 on digits
  (0.949 / 0.946 / 0.955 / 0.955 on breast_cancer); random starts and a fixed η are within
  0.01 of the defaults (digits 0.941 both against 0.933, breast_cancer 0.954 / 0.955
  against 0.955); real starts are kept because each synthetic example then begins as a
  summary of real points, and on breast_cancer they fit 6× closer (residual 0.001 against
  0.0065).
- Time (2 CPU cores shared with other jobs, one thread; ranges over runs): distillation
  1.1–2.4 s (breast_cancer) and 4.9–6.3 s (digits, m = 4, one run at 28 s while the cores
  were busy; 9–22 s at m = 8); online, the
  whole G × T attribution matrix in 1–6 ms. Retraining all 36 / 90 supervision and
  validation models took 0.06–0.08 s / 0.9–2.3 s (10–26 ms per digits model, so 0.4–1 s
  for the G single-group removals); influence functions for the G removals 2–5 ms /
  0.39–0.43 s (Hessian included).
"""

from mp_ray.distill.groups import partition
from mp_ray.distill.job import load_distilled, run_distill, validate
from mp_ray.distill.matching import Distillation, distil
from mp_ray.distill.model import DistilledDatamodel
from mp_ray.distill.report import DistillReport, format_report
from mp_ray.distill.storage import DistilledNotFoundError
from mp_ray.distill.synset import Synsets, initial_synsets, synset_gradients

__all__ = [
    "DistillReport",
    "Distillation",
    "DistilledDatamodel",
    "DistilledNotFoundError",
    "Synsets",
    "distil",
    "format_report",
    "initial_synsets",
    "load_distilled",
    "partition",
    "run_distill",
    "synset_gradients",
    "validate",
]
