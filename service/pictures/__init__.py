"""Pictures -> model input rows: decoding (``decode``) and normalisation (``normalise``).

Numpy and Pillow only, no Flask: serving calls this through the data plane, and training imports the
same code for users' own pictures, so what is trained is what is served.
"""
