"""The three questions behind one contract (:class:`labkit.questions.registry.Question`), the original report's
numbers and claims, and the ImageNet -> STL-10 map."""
