"""Transformer priors over codec tokens: token layout and window planning (pure logic).

The priors themselves, their training and the sampling engines arrive with issue
"hierarchical prior"; these modules are the parts that decide *what* tokens a prior sees.
"""
