"""euclidean"""
