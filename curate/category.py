"""Zero-shot video category for the corpus report (LaVie §4.1, App. B Fig. 8).

Vimeo25M's videos come in ten Vimeo categories. When a raw directory is not organised by
category, the category is read off the clip: the mean of its frames' open_clip image embeddings
against the text embeddings of one prompt per category, as in CLIP's zero-shot classification.
The `clip` stage (`curate/clip_scores.py`) does it with the embeddings it scores aesthetics on.
"""

from __future__ import annotations


VIMEO_CATEGORIES = (
    "Ads and Commercials", "Animation", "Branded Content", "Comedy", "Documentary",
    "Experimental", "Music", "Narrative", "Sports", "Travel",
)
DEFAULT_PROMPT = "a frame from a {category} video"
