"""Pipeline steps: each module holds a plain typed function and its thin KFP component."""
