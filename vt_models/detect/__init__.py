"""Video object detection: data, the task for the generic loop, training, evaluation, prediction."""
