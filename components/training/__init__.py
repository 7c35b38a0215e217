"""Training and evaluation: the final fit with the chosen parameters (train_final), test metrics
(evaluate), and the one interface every model type predicts through."""
