print("anygatectl")
