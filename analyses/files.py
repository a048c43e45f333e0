"""The names of the files each command writes, in one place (imports nothing of
``analyses``): the steps, the pipeline, the report and the docs read them from here."""

from __future__ import annotations

__all__ = [
    "ANSWER_FILES",
    "ATTENTION_FILES",
    "EMBEDDINGS_FILE",
    "EXPERIMENT_FILES",
    "EXPERIMENT_RECORD",
    "FEATURE_FILES",
    "FEATURE_PAGE_FILES",
    "FIGURE_NAMES",
    "LENS_FILES",
    "MINE_FILES",
    "MOF_FILES",
    "OUTPUT_FILES",
    "PAIRS_EVAL_FILES",
    "PATCH_FILES",
    "PIXEL_FILES",
    "REDUNDANCY_FILES",
    "RUN_MARKER",
    "SAE_FILES",
]

# Figures, by the name a step gives them -> file name without its format's suffix.
FIGURE_NAMES = {
    "map": "layer_attribute_map",
    "redundancy": "redundancy_curves",  # accuracy against random tokens (token_count_curves)
    "pixels": "pixel_error_by_depth",
    "used": "decodable_vs_used",
    "windows": "layer_window_sweep",
    "drops": "token_dropping",
    "patching": "patching_map",
    "lens": "lens_ranks",
    "attention": "attention_map",
    "attention_mass": "attention_by_layer",
    "attribution": "attribution_map",  # interp attribute: one per method, _<method>
}
ANSWER_FILES = {"answers": "answers.csv", "answer_rows": "answer_rows.csv"}
PATCH_FILES = {"patching": "patching.csv", "patch_pair": "patching_pair.png"}
PIXEL_FILES = {"pixels": "pixel_reconstruction.csv", "pixel_grid": "pixel_reconstructions.png"}
LENS_FILES = {"lens": "lens.csv", "lens.html": f"{FIGURE_NAMES['lens']}.html"}
ATTENTION_FILES = {
    "attention": "attention.csv",
    "attention_map": f"{FIGURE_NAMES['attention']}.html",
    "attention_mass": f"{FIGURE_NAMES['attention_mass']}.html",
}
MINE_FILES = {
    "pairs": "pairs.csv",
    "matched_pairs": "matched_pairs.csv",
    "pairs_settings": "pairs.json",
    "pairs_picture": "blind_pairs.png",
}
PAIRS_EVAL_FILES = {"paired": "paired.csv", "pair_answers": "pair_answers.csv"}
EMBEDDINGS_FILE = "embeddings.h5"  # reused by a later run on the same images and encoders
MOF_FILES = {"mof": "mof.csv"}  # and mixture_of_features.<format>
REDUNDANCY_FILES = {"redundancy": "redundancy.csv"}  # and redundancy_by_depth.<format>
# interp experiment: each one's tables and figures (encoder's pictures:
# reconstructions_<model>.png), and the record of which experiment a folder holds.
EXPERIMENT_FILES = {
    "complexity": ["redundancy.csv", "probes.csv", "answers.csv", "compression_by_depth.html",
                   "accuracy_by_level.html", "complexity_levels.png"],
    "encoder": ["pixels.csv", "answers.csv", "pixel_error_by_depth.html"],
}  # fmt: skip
EXPERIMENT_RECORD = "experiment.json"
# interp sae train: the held-out metrics of every SAE (each SAE in OUT/<site>/<name>/,
# its site's log in OUT/<site>/training_log.csv).
SAE_FILES = {"sae_metrics": "sae_metrics.csv"}
# interp sae features: every feature's best class per attribute, and the counts of
# features specific to each attribute (beside the probes' accuracy where given).
FEATURE_FILES = {"features": "features.csv", "feature_counts": "feature_counts.csv"}
# interp sae pages: the chosen features' page and grid.
FEATURE_PAGE_FILES = {"page": "feature_pages.html", "grid": "feature_grid.png"}
# interp run: everything in its folder.
OUTPUT_FILES = {
    "cache": "cache.h5",
    "probes": "probes.csv",
    "figure": f"{FIGURE_NAMES['map']}.html",
    "redundancy": f"{FIGURE_NAMES['redundancy']}.html",
    "redundancy_metrics": REDUNDANCY_FILES["redundancy"],
    "pixels": PIXEL_FILES["pixels"],
    "pixel_grid": PIXEL_FILES["pixel_grid"],
    "pixel_figure": f"{FIGURE_NAMES['pixels']}.html",
    **ANSWER_FILES,
    "used_figure": f"{FIGURE_NAMES['used']}.html",
    "window_figure": f"{FIGURE_NAMES['windows']}.html",
    "drop_figure": f"{FIGURE_NAMES['drops']}.html",
    "settings": "run.json",
    "report": "report.html",
}
# Written when a run starts its work, removed when it has finished: a rerun of the same
# settings that finds it continues (the cache resumes, the probe table is kept).
RUN_MARKER = ".run.started.json"
