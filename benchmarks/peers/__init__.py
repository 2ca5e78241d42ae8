"""This service against peer model servers on the same model.tflite: python -m benchmarks.peers.

Only classifier.py and the peers' own modules run inside the peers' virtualenvs: keep this
package's __init__ free of imports.
"""
