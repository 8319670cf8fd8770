import os

# Keep TensorFlow to the two cores' worth of threads and quiet at import.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
