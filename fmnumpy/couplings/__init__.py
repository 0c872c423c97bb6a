"""couplings"""
