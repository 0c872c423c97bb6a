"""discrete"""
