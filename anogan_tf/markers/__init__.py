"""Marker discovery: group anomalous regions into candidate imaging markers.

The paper's purpose ("... to Guide Marker Discovery"): find the anomalous
regions in a population's scans and group them into candidate markers for an
expert to review. It reads only the Scorer's outputs:

  regions.py   thresholds from normal calibration maps; connected regions
  describe.py  shape, intensity, position and learned descriptors; PCA
  cluster.py   KMeans / agglomerative / HDBSCAN markers, medoid prototypes
  evaluate.py  ARI, NMI and per-type recall against known types
  report.py    regions.csv, images.csv, markers.json, sheets, index.html
  pipeline.py  run_discovery: all of it (what anogan-discover calls)

docs/markers.md describes the outputs and how to read the report.
"""

from anogan_tf.markers.cluster import Clustering, cluster_regions
from anogan_tf.markers.describe import Descriptors, describe_regions, embed
from anogan_tf.markers.evaluate import KnownTypes, evaluate_markers
from anogan_tf.markers.pipeline import (DiscoveryConfig,
                                        load_discovery_inputs, run_discovery)
from anogan_tf.markers.regions import (RegionSet, RegionThreshold,
                                       calibrate_threshold, find_regions)

__all__ = ["Clustering", "cluster_regions", "Descriptors",
           "describe_regions", "embed", "KnownTypes", "evaluate_markers",
           "DiscoveryConfig", "load_discovery_inputs", "run_discovery",
           "RegionSet", "RegionThreshold", "calibrate_threshold",
           "find_regions"]
