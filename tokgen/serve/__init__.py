"""The network edge: the gRPC servicer (thin, over ``tokgen.prior``) and its server."""
