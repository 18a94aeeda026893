"""(index written below)"""
