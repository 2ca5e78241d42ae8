"""The prediction store: what the service was asked and answered, and the true labels sent back.

Off unless PREDICTION_STORE names a folder (an embedded SQLite database there) or a
postgresql:// URL (replicas on many nodes). service/store/recorder.py writes predictions
off the request path; service/store/feedback.py takes true classes by prediction id;
service/store/database.py hides the two databases' differences; service/store/schema.py
holds the tables and their migrations.
"""
