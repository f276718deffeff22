"""One unit per aggregate function (see ../unit.py for what a unit provides), in a module
named for the function, exporting UNIT. accumulators.py loads them in the order of
definitions.functions.AGGREGATE_FUNCTIONS; modules of shared kernels are named
after what they share."""
