from .seed_coco_metric import SeedCocoMetric

__all__ = ['SeedCocoMetric']
