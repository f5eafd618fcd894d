print("anygated")
