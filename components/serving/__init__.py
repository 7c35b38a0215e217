"""Serving the champion: raw rows in any MLflow request format -> click probabilities.

`_encoder` turns columns of plain Python values into feature ids exactly as prepare_data does
(proven by tests/serving), `requests` parses MLflow's request formats with size and depth limits,
`predictor` is the one prediction function that both the MLflow pyfunc and the lean HTTP server
(`server`) call, so the two cannot diverge.
"""
