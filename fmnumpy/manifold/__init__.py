"""manifold"""
